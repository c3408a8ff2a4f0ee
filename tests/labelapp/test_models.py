"""Database constraints hold the invariants; services check what a CHECK cannot."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from labelapp.errors import Conflict, ValidationFailed
from labelapp.models import Comparison, Job, Label, ModelVersion, Prompt, Response
from labelapp.services import (
    comparison_create,
    project_create,
    prompt_get_or_create,
    response_get_or_create,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def prompt():
    project = project_create(name="p")
    return prompt_get_or_create(
        project=project, messages=[{"role": "user", "content": "hi"}]
    )


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
    r = response_get_or_create(prompt=prompt, text="x")
    assert response_get_or_create(prompt=prompt, text="x") == r
    _violates(
        lambda: Response.objects.create(prompt=prompt, text="x", text_hash=r.text_hash)
    )


def test_comparison_constraints(prompt):
    r1 = response_get_or_create(prompt=prompt, text="one")
    r2 = response_get_or_create(prompt=prompt, text="two")
    comparison, created = comparison_create(prompt=prompt, response_x=r2, response_y=r1)
    assert created and (comparison.response_a, comparison.response_b) == (r1, r2)
    assert comparison.labels_required == prompt.project.overlap
    again, created = comparison_create(prompt=prompt, response_x=r1, response_y=r2)
    assert again == comparison and not created
    with pytest.raises(Conflict, match="already a comparison"):
        comparison_create(
            prompt=prompt, response_x=r1, response_y=r2, if_exists="conflict"
        )
    with pytest.raises(ValueError, match="if_exists must be"):
        comparison_create(prompt=prompt, response_x=r1, response_y=r2, if_exists="x")
    fields = {"project": prompt.project, "prompt": prompt, "labels_required": 1}
    _violates(lambda: Comparison.objects.create(response_a=r2, response_b=r1, **fields))
    _violates(lambda: Comparison.objects.create(response_a=r1, response_b=r1, **fields))
    _violates(lambda: Comparison.objects.filter(pk=comparison.pk).update(p_a=1.5))
    _violates(lambda: Comparison.objects.filter(pk=comparison.pk).update(is_gold=True))


def test_comparison_responses_must_belong_to_its_prompt(prompt):
    other = prompt_get_or_create(
        project=prompt.project, messages=[{"role": "user", "content": "other"}]
    )
    mine = response_get_or_create(prompt=prompt, text="one")
    theirs = response_get_or_create(prompt=other, text="two")
    with pytest.raises(ValidationFailed, match="belongs to prompt"):
        comparison_create(prompt=prompt, response_x=mine, response_y=theirs)
    with pytest.raises(ValidationFailed, match="two different responses"):
        comparison_create(prompt=prompt, response_x=mine, response_y=mine)
    assert not Comparison.objects.exists()


def test_label_constraints(prompt):
    r1 = response_get_or_create(prompt=prompt, text="one")
    r2 = response_get_or_create(prompt=prompt, text="two")
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
