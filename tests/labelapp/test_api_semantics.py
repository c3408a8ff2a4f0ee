"""What the API's words mean (issue 15, items 6-9): a label's choice as the annotator
saw it beside the canonical one, no strength for tie and both bad, ``round`` as the
round number, and the origin of what the API creates."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection

from labelapp.models import Assignment, Comparison, Label, Response, Round
from labelapp.queue import comparison_next_for, label_submit

from .conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


def _lease(client, project, *, swapped: bool) -> dict:
    body = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    # The side shown left is random per assignment; pin it as the test needs.
    Assignment.objects.filter(pk=body["assignment_id"]).update(swapped=swapped)
    return body


def _label_url(body: dict) -> str:
    return f"/api/v1/assignments/{body['assignment_id']}/label/"


# --- item 6: the rationale's letters are the displayed ones ------------------------


def test_label_keeps_the_displayed_choice_beside_the_canonical_one(
    project, api_client_for, user_factory
):
    make_comparisons(project, 1)
    user = make_user(project=project)
    client = api_client_for(user)
    body = _lease(client, project, swapped=True)
    created = client.post(
        _label_url(body),
        {"choice": "b", "strength": 3, "rationale": "B answers the question directly"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["choice"] == "b"  # the annotator's own terms, as before

    staff = api_client_for(user_factory(staff=True))
    (row,) = staff.get(f"/api/v1/labels/?project={project.pk}").json()["results"]
    assert row["shown_swapped"] is True
    assert row["choice"] == "a"  # the right-hand answer was response_a
    assert row["displayed_choice"] == "b"  # the letter the rationale uses
    assert row["rationale"].startswith("B answers")
    assert staff.get(f"/api/v1/labels/{row['id']}/").json()["displayed_choice"] == "b"


# --- item 7: tie and both bad have no strength -------------------------------------


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
def test_tie_and_both_bad_need_no_strength_and_store_none(
    project, api_client_for, choice
):
    make_comparisons(project, 2)
    user = make_user(project=project)
    client = api_client_for(user)
    # Sent without one (the compare page now does so).
    first = _lease(client, project, swapped=False)
    resp = client.post(_label_url(first), {"choice": choice}, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["strength"] is None
    # Sent with one (clients written when strength was required): dropped.
    second = _lease(client, project, swapped=False)
    resp = client.post(
        _label_url(second),
        {"choice": choice, "strength": 1, "idempotency_key": "k2"},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["strength"] is None
    # ... and its repeat is recognised as the same submission.
    again = client.post(
        _label_url(second),
        {"choice": choice, "strength": 1, "idempotency_key": "k2"},
        format="json",
    )
    assert again.status_code == 200 and again.json() == resp.json()
    assert list(Label.objects.values_list("strength", flat=True)) == [None, None]
    for c in Comparison.objects.filter(project=project):
        assert c.mean_strength is None


def test_a_and_b_still_need_a_strength(project, api_client_for):
    make_comparisons(project, 1)
    client = api_client_for(make_user(project=project))
    body = _lease(client, project, swapped=False)
    for payload in ({"choice": "a"}, {"choice": "b", "strength": None}):
        resp = client.post(_label_url(body), payload, format="json")
        assert resp.status_code == 400, resp.content
        assert resp.json() == {"strength": ["This field is required."]}
    assert not Label.objects.exists()


def test_service_drops_a_strength_sent_with_a_tie(project):
    make_comparisons(project, 1)
    user = make_user(project=project)
    assignment = comparison_next_for(annotator=user, project=project.pk)
    label, created = label_submit(
        assignment_id=assignment.pk, annotator=user, choice="tie", strength=4
    )
    assert created and label.strength is None
    assert Label.objects.get(pk=label.pk).strength is None


def test_migration_nulls_the_strength_of_stored_ties_and_both_bad(project):
    migration = importlib.import_module(
        "labelapp.migrations.0010_label_strength_null_for_tie_both_bad"
    )
    (comparison,) = make_comparisons(project, 1)
    users = [make_user(project=project) for _ in range(3)]
    for user, choice, p_a, strength in (
        (users[0], "a", 1.0, 4),
        (users[1], "tie", 0.5, 1),
        (users[2], "both_bad", None, 1),
    ):
        Label.objects.create(
            comparison=comparison,
            annotator=user,
            choice=choice,
            p_a=p_a,
            strength=strength,
        )
    migration.null_strength_of_tie_and_both_bad(
        apps, SimpleNamespace(connection=connection)
    )
    got = dict(Label.objects.values_list("choice", "strength"))
    assert got == {"a": 4, "tie": None, "both_bad": None}


# --- item 8: "round" is the round number; the id is "round_id" ---------------------


def test_round_is_the_number_and_round_id_the_id(project, api_client_for, user_factory):
    other = make_project()
    # Round ids and numbers differ: the other project's round takes id first.
    Round.objects.create(project=other, number=0)
    round0 = Round.objects.create(project=project, number=0)
    round1 = Round.objects.create(project=project, number=1)
    in0, in1, none = make_comparisons(project, 3)
    Comparison.objects.filter(pk=in0.pk).update(round=round0)
    Comparison.objects.filter(pk=in1.pk).update(round=round1)
    Response.objects.filter(pk=in1.response_a_id).update(round=round1)
    client = api_client_for(user_factory(staff=True))

    row = client.get(f"/api/v1/comparisons/{in1.pk}/").json()
    assert (row["round"], row["round_id"]) == (1, round1.pk)
    assert client.get(f"/api/v1/comparisons/{none.pk}/").json()["round"] is None
    response = client.get(f"/api/v1/responses/{in1.response_a_id}/").json()
    assert (response["round"], response["round_id"]) == (1, round1.pk)

    def ids(query: str) -> set[int]:
        resp = client.get(f"/api/v1/comparisons/?project={project.pk}&{query}")
        assert resp.status_code == 200, resp.content
        return {r["id"] for r in resp.json()["results"]}

    assert ids("round=0") == {in0.pk}  # was: the id filter, so 0 -> nothing
    assert ids("round=1") == {in1.pk}
    assert ids(f"round_id={round1.pk}") == {in1.pk}


def test_round_id_is_what_a_client_writes(project, api_client_for, user_factory):
    round3 = Round.objects.create(project=project, number=3)
    foreign = Round.objects.create(project=make_project(), number=3)
    (existing,) = make_comparisons(project, 1)
    client = api_client_for(user_factory(project=project, role="admin"))
    made = client.post(
        "/api/v1/responses/",
        {"prompt": existing.prompt_id, "text": "third", "round_id": round3.pk},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert (made.json()["round"], made.json()["round_id"]) == (3, round3.pk)
    refused = client.post(
        "/api/v1/comparisons/",
        {
            "project": project.pk,
            "response_a": existing.response_a_id,
            "response_b": made.json()["id"],
            "round_id": foreign.pk,
        },
        format="json",
    )
    assert refused.status_code == 400, refused.content
    assert "round_id" in refused.content.decode()
    # "round" was the id a client wrote: one sent now is refused, naming round_id.
    old_style = client.post(
        "/api/v1/responses/",
        {"prompt": existing.prompt_id, "text": "fourth", "round": round3.pk},
        format="json",
    )
    assert old_style.status_code == 400, old_style.content
    assert "round_id" in old_style.json()["round"][0]


# --- item 9: what the API creates says so ------------------------------------------


def test_api_created_comparisons_are_api_and_responses_human(
    project, api_client_for, user_factory
):
    (existing,) = make_comparisons(project, 1)
    client = api_client_for(user_factory(project=project, role="admin"))
    response = client.post(
        "/api/v1/responses/",
        {"prompt": existing.prompt_id, "text": "a third answer"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["origin"] == "human"
    comparison = client.post(
        "/api/v1/comparisons/",
        {
            "project": project.pk,
            "response_a": existing.response_a_id,
            "response_b": response.json()["id"],
        },
        format="json",
    )
    assert comparison.status_code == 201, comparison.content
    assert comparison.json()["origin"] == "api"
    assert Comparison.objects.get(pk=comparison.json()["id"]).origin == "api"
    listed = client.get(f"/api/v1/comparisons/?project={project.pk}&origin=api")
    assert [r["id"] for r in listed.json()["results"]] == [comparison.json()["id"]]


# --- the API writes projects through the same services as the pages ---------------


def test_api_patch_of_k_reopens_and_completes_as_the_settings_page_does(
    project, api_client_for
):
    # k = 3; one comparison complete with 2 labels under k = 2 would be reopened
    # by k = 3, one open with 2 labels is completed by k = 2.
    done, waiting = make_comparisons(project, 2)
    Comparison.objects.filter(pk=done.pk).update(
        status="complete", labels_count=3, completed_at="2026-01-01T00:00:00Z"
    )
    Comparison.objects.filter(pk=waiting.pk).update(labels_count=2)
    admin = make_user(project=project, role="admin")
    client = api_client_for(admin)
    url = f"/api/v1/projects/{project.pk}/"
    response = client.patch(url, {"overlap": 2}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["overlap"] == 2
    waiting.refresh_from_db()
    assert (waiting.status, waiting.labels_required) == ("complete", 2)
    response = client.patch(url, {"overlap": 4}, format="json")
    assert response.status_code == 200, response.content
    done.refresh_from_db()
    waiting.refresh_from_db()
    assert (done.status, done.labels_required) == ("open", 4)
    assert (waiting.status, waiting.labels_required) == ("open", 4)


def test_api_created_project_has_its_creator_as_admin(api_client_for, user_factory):
    staff = user_factory(staff=True, superuser=False)
    client = api_client_for(staff)
    response = client.post("/api/v1/projects/", {"name": "made by api"}, format="json")
    assert response.status_code == 201, response.content
    from labelapp.models import Membership

    (member,) = Membership.objects.filter(project_id=response.json()["id"])
    assert (member.user, member.role) == (staff, "admin")
