"""Undo, edit and skip reasons over the REST API: the annotator's own label, in
display terms, with the service's refusals as 4xx."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labelapp.models import Assignment, Comparison, Label
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


def test_label_edit_undo_and_skip_reason_over_the_api(api_client_for):
    project = make_project(overlap=1, undo_grace_seconds=120)
    first, _second = make_comparisons(project, 2)
    user = make_user(project=project)
    client = api_client_for(user)
    lease = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    submitted = client.post(
        f"/api/v1/assignments/{lease['assignment_id']}/label/",
        {"choice": "a", "strength": 2},
        format="json",
    ).json()
    label_id = submitted["id"]

    bad = client.post(
        f"/api/v1/labels/{label_id}/edit/", {"choice": "b"}, format="json"
    )
    assert bad.status_code == 400 and "strength" in bad.json()
    edited = client.post(
        f"/api/v1/labels/{label_id}/edit/",
        {"choice": "b", "strength": 4, "rationale": "B cites a source"},
        format="json",
    )
    assert edited.status_code == 200, edited.content
    body = edited.json()
    assert body["displayed_choice"] == "b" and body["strength"] == 4
    assert body["edited_at"] is not None

    undone = client.post(f"/api/v1/labels/{label_id}/undo/")
    assert undone.status_code == 200, undone.content
    assert undone.json()["state"] == "leased"
    assert undone.json()["id"] == lease["assignment_id"]
    assert not Label.objects.filter(pk=label_id).exists()
    comparison = Comparison.objects.get(pk=lease["comparison_id"])
    assert comparison.status == "open" and comparison.labels_count == 0
    again = client.post(f"/api/v1/labels/{label_id}/undo/")
    assert again.status_code == 404  # the label is gone

    # next resumes the lease the undo gave back; skip it with a reason.
    resumed = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    assert resumed["assignment_id"] == lease["assignment_id"]
    too_long = client.post(
        f"/api/v1/assignments/{resumed['assignment_id']}/skip/",
        {"reason": "x" * 201},
        format="json",
    )
    assert too_long.status_code == 400 and "reason" in too_long.json()
    skipped = client.post(
        f"/api/v1/assignments/{resumed['assignment_id']}/skip/",
        {"reason": "Needs expertise I lack"},
        format="json",
    )
    assert skipped.status_code == 200
    assert skipped.json()["skip_reason"] == "Needs expertise I lack"
    assert Assignment.objects.get(pk=resumed["assignment_id"]).state == "skipped"
    assert first.pk in {lease["comparison_id"], _second.pk}


def test_an_old_label_is_a_409_naming_the_window(api_client_for):
    project = make_project(overlap=1, undo_grace_seconds=30)
    make_comparisons(project, 1)
    user = make_user(project=project)
    client = api_client_for(user)
    lease = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    label_id = client.post(
        f"/api/v1/assignments/{lease['assignment_id']}/label/",
        {"choice": "tie"},
        format="json",
    ).json()["id"]
    Label.objects.filter(pk=label_id).update(
        created_at=Label.objects.get(pk=label_id).created_at - timedelta(seconds=31)
    )
    refused = client.post(f"/api/v1/labels/{label_id}/undo/")
    assert refused.status_code == 409
    assert "30 s" in refused.json()["detail"]
    assert Label.objects.filter(pk=label_id).exists()
