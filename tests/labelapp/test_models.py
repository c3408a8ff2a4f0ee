"""Database constraints hold the invariants (what services check beyond a CHECK:
services/test_content.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from labelapp.models import Comparison, Job, Label, ModelVersion, Prompt, Response
from labelapp.services.content import comparison_create, response_create

pytestmark = pytest.mark.django_db


def _violates(fn) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_prompt_and_response_are_unique_by_content(prompt):
    _violates(
        lambda: Prompt.objects.create(
            project=prompt.project,
            messages=prompt.messages,
            content_hash=prompt.content_hash,
        )
    )
    r = response_create(prompt=prompt, text="x")
    _violates(
        lambda: Response.objects.create(prompt=prompt, text="x", text_hash=r.text_hash)
    )


def test_comparison_constraints(prompt):
    r1 = response_create(prompt=prompt, text="one")
    r2 = response_create(prompt=prompt, text="two")
    comparison, _ = comparison_create(prompt=prompt, response_x=r1, response_y=r2)
    fields = {"project": prompt.project, "prompt": prompt, "labels_required": 1}
    _violates(lambda: Comparison.objects.create(response_a=r2, response_b=r1, **fields))
    _violates(lambda: Comparison.objects.create(response_a=r1, response_b=r1, **fields))
    _violates(lambda: Comparison.objects.filter(pk=comparison.pk).update(p_a=1.5))
    _violates(lambda: Comparison.objects.filter(pk=comparison.pk).update(is_gold=True))


def test_label_constraints(prompt):
    r1 = response_create(prompt=prompt, text="one")
    r2 = response_create(prompt=prompt, text="two")
    comparison, _ = comparison_create(prompt=prompt, response_x=r1, response_y=r2)
    user = get_user_model().objects.create_user("ann")
    base = {"comparison": comparison, "annotator": user}
    _violates(lambda: Label.objects.create(choice="a", p_a=1.0, strength=5, **base))
    _violates(lambda: Label.objects.create(choice="a", p_a=1.2, **base))
    _violates(lambda: Label.objects.create(choice="both_bad", p_a=0.5, **base))
    Label.objects.create(choice="a", p_a=1.0, strength=4, **base)
    _violates(lambda: Label.objects.create(choice="b", p_a=0.0, **base))


def test_one_active_job_per_project_and_kind(prompt):
    project = prompt.project
    Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM)
    _violates(lambda: Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM))
    Job.objects.create(project=project, kind=Job.Kind.ROUND)
    Job.objects.filter(kind=Job.Kind.TRAIN_RM).update(status=Job.Status.SUCCEEDED)
    Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM)
    _violates(lambda: Job.objects.filter(kind=Job.Kind.ROUND).update(progress=1.5))


def test_one_promoted_model_version(prompt):
    project = prompt.project
    ModelVersion.objects.create(
        project=project, version=1, base_ref="b", status="promoted"
    )
    _violates(
        lambda: ModelVersion.objects.create(
            project=project, version=2, base_ref="b", status="promoted"
        )
    )
    _violates(
        lambda: ModelVersion.objects.create(project=project, version=1, base_ref="b")
    )
