"""The "my recent labels" page and the compare page's undo endpoint: what is
offered while the grace period lasts, and that the forms reach the service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labelapp.models import Assignment, Label
from labelapp.queue import assignment_skip, comparison_next_for, label_submit
from tests.frontend.conftest import client_for
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


def _labelled(project, user):
    lease = comparison_next_for(annotator=user, project=project)
    label, _ = label_submit(assignment_id=lease.pk, annotator=user, choice="tie")
    return lease, label


def test_recent_labels_offer_edit_and_undo_within_the_window():
    project = make_project(overlap=1, undo_grace_seconds=300)
    make_comparisons(project, 2)
    user = make_user(project=project)
    lease, label = _labelled(project, user)
    client = client_for(user)
    page = client.get(reverse("frontend:my-labels", args=[project.pk])).content.decode()
    assert f'id="label-{label.pk}"' in page
    assert reverse("frontend:my-label-edit", args=[project.pk, label.pk]) in page
    assert reverse("frontend:my-label-undo", args=[project.pk, label.pk]) in page

    bad = client.post(
        reverse("frontend:my-label-edit", args=[project.pk, label.pk]),
        {"choice": "a", "strength": ""},
        follow=True,
    )
    assert "was not changed: strength" in bad.content.decode()
    assert Label.objects.get(pk=label.pk).choice == "tie"

    undone = client.post(reverse("frontend:my-label-undo", args=[project.pk, label.pk]))
    assert undone.status_code == 302
    assert undone["Location"] == reverse("frontend:compare", args=[project.pk])
    assert not Label.objects.filter(pk=label.pk).exists()
    assert Assignment.objects.get(pk=lease.pk).state == "leased"


def test_no_forms_and_a_refusal_when_the_project_has_undo_off():
    project = make_project(overlap=1, undo_grace_seconds=0)
    make_comparisons(project, 1)
    user = make_user(project=project)
    _lease, label = _labelled(project, user)
    client = client_for(user)
    page = client.get(reverse("frontend:my-labels", args=[project.pk])).content.decode()
    assert "does not allow undoing" in page
    assert reverse("frontend:my-label-edit", args=[project.pk, label.pk]) not in page
    compare = client.get(
        reverse("frontend:compare", args=[project.pk])
    ).content.decode()
    assert 'id="undo"' not in compare
    refused = client.post(reverse("frontend:compare-undo", args=[project.pk]))
    assert refused.status_code == 409
    assert Label.objects.filter(pk=label.pk).exists()


def test_compare_undo_returns_the_pair_with_the_old_answer():
    project = make_project(overlap=1)
    make_comparisons(project, 2)
    user = make_user(project=project)
    lease = comparison_next_for(annotator=user, project=project)
    label_submit(assignment_id=lease.pk, annotator=user, choice="a", strength=2)
    response = client_for(user).post(
        reverse("frontend:compare-undo", args=[project.pk])
    )
    assert response.status_code == 200
    body = response.json()
    assert body["assignment"]["assignment_id"] == lease.pk
    assert "html" in body["assignment"]["a"]
    assert body["answer"]["strength"] == 2
    assert body["answer"]["choice"] == "a"  # display terms, as submitted
    assert body["progress"]["done_total"] == 0


def test_quality_page_counts_skips_by_reason():
    project = make_project(overlap=1)
    make_comparisons(project, 3)
    reviewer = make_user(project=project, role="reviewer")
    for reason in ("Prompt unclear", "Prompt unclear", ""):
        user = make_user(project=project)
        lease = comparison_next_for(annotator=user, project=project)
        assignment_skip(assignment_id=lease.pk, annotator=user, reason=reason)
    page = client_for(reviewer).get(reverse("frontend:quality", args=[project.pk]))
    html = page.content.decode()
    table = html[html.index('id="skip-reasons"') :]
    assert "<td>Prompt unclear</td><td>2</td>" in table
    assert "<td><em>none given</em></td><td>1</td>" in table
