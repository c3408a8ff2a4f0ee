"""/api/v1/label-notes/: bad input is a 4xx naming the field, never a 5xx."""

from __future__ import annotations

import pytest

from labelapp.models import NOTE_MAX_CHARS, LabelNote
from labelapp.queue import comparison_next_for, label_submit
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(api_client_for):
    project = make_project()
    make_comparisons(project, 2)
    author = make_user(project=project)
    lease = comparison_next_for(annotator=author, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=author, choice="b", strength=1
    )
    reviewer = make_user(project=project, role="reviewer")
    return {
        "label": label,
        "project": project,
        "client": api_client_for(reviewer),
        "author": api_client_for(author),
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"body": "x"}, "label"),
        ({"label": "abc", "body": "x"}, "label"),
        ({"label": 2**64, "body": "x"}, "label"),
        ({"label": "{label}"}, "body"),
        ({"label": "{label}", "body": ""}, "body"),
        ({"label": "{label}", "body": "  "}, "body"),
        ({"label": "{label}", "body": "x" * (NOTE_MAX_CHARS + 1)}, "body"),
        ({"label": "{label}", "body": ["x"]}, "body"),
        ({"label": "{label}", "body": {"a": 1}}, "body"),
    ],
)
def test_bad_input_names_the_field(setup, body, field):
    data = {k: setup["label"].pk if v == "{label}" else v for k, v in body.items()}
    resp = setup["client"].post("/api/v1/label-notes/", data, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json(), resp.json()
    assert not LabelNote.objects.exists()


def test_unknown_label_is_404_and_bad_filters_400(setup):
    client = setup["client"]
    resp = client.post(
        "/api/v1/label-notes/", {"label": 10**12, "body": "x"}, format="json"
    )
    assert resp.status_code == 404
    assert client.get("/api/v1/label-notes/?label=x").status_code == 400
    assert client.get("/api/v1/label-notes/?project=x").status_code == 400
    read = client.post("/api/v1/label-notes/read/", {"project": "x"}, format="json")
    assert read.status_code == 400 and "project" in read.json()


def test_create_list_filter_and_read(setup):
    client, label = setup["client"], setup["label"]
    resp = client.post(
        "/api/v1/label-notes/",
        {"label": label.pk, "body": "<b>Tie?</b>"},
        format="json",
    )
    assert resp.status_code == 201
    note = resp.json()
    assert note["body"] == "<b>Tie?</b>" and note["label"] == label.pk
    assert note["project"] == setup["project"].pk and note["read_at"] is None
    listed = client.get(f"/api/v1/label-notes/?label={label.pk}").json()["results"]
    assert [n["id"] for n in listed] == [note["id"]]
    assert client.get("/api/v1/label-notes/?label=999999").json()["results"] == []
    # Unread is about the caller's own labels: the reviewer has none.
    assert client.get("/api/v1/label-notes/?unread=1").json()["results"] == []
    author = setup["author"]
    assert len(author.get("/api/v1/label-notes/?unread=1").json()["results"]) == 1
    # The reviewer cannot mark the annotator's notes read.
    assert client.post("/api/v1/label-notes/read/", {}, format="json").json() == {
        "marked": 0
    }
    read = author.post(
        "/api/v1/label-notes/read/", {"project": setup["project"].pk}, format="json"
    )
    assert read.json() == {"marked": 1}
