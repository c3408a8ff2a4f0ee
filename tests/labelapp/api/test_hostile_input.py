"""Input the database or the parser would choke on is a 400 naming the problem (issue
14 items 3, 4, 7, 11): CHECK-bound settings, JSON settings checked against the
training configs they configure, crafted cursors, deep nesting, NUL, oversized
bodies. Real PostgreSQL; each case was a 500 (or a silent 201) before."""

from __future__ import annotations

import json

import pytest
from django.db.models import CheckConstraint
from rest_framework.test import APIClient

from labelapp.models import Comparison, Project
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db

# Every CHECK on Project and Comparison -> a request that violates it -> the field
# the 400 must name. A new constraint without a row here fails the coverage test.
PROJECT_CHECKS = {
    "project_overlap_gte_1": ("overlap", 0),
    "project_gold_rate_0_1": ("gold_rate", 2),
    "project_lease_gte_10s": ("lease_seconds", 1),
    "project_n_gte_1": ("n_samples", 0),
    "project_temperature_gte_0": ("temperature", -1),
    "project_top_p_0_1": ("top_p", 5),
    "project_sampler_backend_known": ("sampler_backend", "gpt"),
}
COMPARISON_CHECKS = {
    "comparison_k_gte_1": "labels_required",
    "comparison_gold_has_answer": "gold_choice",
    # Not reachable through the API: the service orders the pair (a < b) and p_a
    # is computed, never written by a client.
    "comparison_a_lt_b": None,
    "comparison_p_a_0_1": None,
}


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(make_user(staff=True))
    return client


def _checks(model) -> set[str]:
    return {c.name for c in model._meta.constraints if isinstance(c, CheckConstraint)}


def test_every_check_constraint_has_a_case():
    assert _checks(Project) == set(PROJECT_CHECKS)
    assert _checks(Comparison) == set(COMPARISON_CHECKS)


@pytest.mark.parametrize("name", sorted(PROJECT_CHECKS))
@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_project_checks_are_field_errors(staff, name, method):
    field, value = PROJECT_CHECKS[name]
    project = make_project()
    body = {"name": f"p-{name}-{method}", field: value}
    if method == "post":
        response = staff.post("/api/v1/projects/", body, format="json")
    else:
        call = getattr(staff, method)
        response = call(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field], response.json()


def test_project_admin_gets_the_same_400():
    project = make_project()
    admin = make_user(project=project, role="admin")
    client = APIClient()
    client.force_authenticate(admin)
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"top_p": 0})
    assert response.status_code == 400 and "top_p" in response.json()
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"top_p": 0.9})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("pair_mix", "x", "Must be an object"),
        ("pair_mix", {"random": "lots"}, "random: the weight must be a number"),
        ("pair_mix", {"closest": -1}, "closest: the weight must be a number >= 0"),
        ("pair_mix", {"bogus": 1}, "bogus: unknown strategy"),
        ("pair_mix", {"random": 0}, "must not all be 0"),
        ("pair_mix", [], "Must be an object"),
        ("rm_config", {"epochs": "x"}, "epochs: unknown setting"),
        ("rm_config", {"num_epochs": "x"}, "num_epochs: must be a number"),
        ("rm_config", {"batch_size": 1.5}, "batch_size: must be a int"),
        ("rm_config", {"use_margins": 1}, "use_margins: must be a bool"),
        ("rm_config", {"margins": [1, 2]}, "margins needs 4 values"),
        ("rm_config", {"learning_rate": 0}, "learning_rate must be > 0"),
        ("rm_config", {"pooling": "max"}, "pooling must be 'mean' or 'cls'"),
        ("rm_config", {"base": "x"}, "base: unknown setting"),
        ("rm_config", {"warm_start": "no"}, "warm_start: must be a boolean"),
        ("rm_config", "x", "Must be an object"),
    ],
)
def test_json_settings_are_checked_against_the_training_configs(
    staff, field, value, problem
):
    project = make_project()
    response = staff.patch(
        f"/api/v1/projects/{project.pk}/", {field: value}, format="json"
    )
    assert response.status_code == 400, response.content
    errors = response.json()
    assert list(errors) == [field]
    assert any(problem in message for message in errors[field]), errors


def test_valid_json_settings_are_stored(staff):
    project = make_project()
    body = {
        "pair_mix": {"closest": 1, "random": 0.5},
        "rm_config": {"num_epochs": 2, "margins": [0, 1, 2, 3], "warm_start": False},
    }
    response = staff.patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert response.status_code == 200, response.content
    project.refresh_from_db()
    assert project.pair_mix == body["pair_mix"]
    assert project.rm_config == body["rm_config"]


@pytest.mark.parametrize("field", ["pair_mix", "rm_config"])
@pytest.mark.parametrize("value", ["null", "[]", '"x"', "{", '{"a": "\\u0000"}'])
def test_form_encoded_json_settings(staff, field, value):
    project = make_project()
    response = staff.patch(
        f"/api/v1/projects/{project.pk}/",
        {field: value},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    response = staff.post(
        "/api/v1/projects/",
        f"name=form-{field}&{field}={value}",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400, response.content


def test_comparison_patch_cannot_strand_it_open(staff):
    project = make_project(overlap=3)
    open_one, complete_one, gold = make_comparisons(project, 3)
    Comparison.objects.filter(pk=open_one.pk).update(labels_count=2)
    Comparison.objects.filter(pk=complete_one.pk).update(
        labels_count=3, status="complete"
    )
    Comparison.objects.filter(pk=gold.pk).update(is_gold=True, gold_choice="a")
    url = "/api/v1/comparisons/{}/"

    response = staff.patch(url.format(open_one.pk), {"labels_required": 2})
    assert response.status_code == 400
    assert "labels_required" in response.json()
    response = staff.patch(url.format(open_one.pk), {"labels_required": 1})
    assert response.status_code == 400
    assert staff.patch(url.format(open_one.pk), {"labels_required": 4}).status_code == (
        200
    )
    response = staff.patch(url.format(complete_one.pk), {"status": "open"})
    assert response.status_code == 400 and "status" in response.json()
    # Retired with all its labels, then reopened: the same rule.
    staff.patch(url.format(complete_one.pk), {"status": "retired"})
    response = staff.patch(url.format(gold.pk), {"gold_choice": ""})
    # The gold service's refusal (CHECK comparison_gold_has_answer) names the field.
    assert response.status_code == 400
    assert response.json()["detail"].startswith("gold_choice: ")
    open_one.refresh_from_db()
    complete_one.refresh_from_db()
    assert open_one.labels_required == 4
    assert complete_one.status in {"complete", "retired"}
    gold.refresh_from_db()
    assert gold.gold_choice == "a"


def test_gold_comparison_created_without_answer_is_a_400(staff):
    project = make_project()
    (c,) = make_comparisons(project, 1)
    c.delete()
    response = staff.post(
        "/api/v1/comparisons/",
        {
            "project": project.pk,
            "response_a": c.response_a_id,
            "response_b": c.response_b_id,
            "is_gold": True,
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("gold_choice: ")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "cD1hYmM%3D",  # p=abc
        "cD0xZTk5",  # p=1e99
        "cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # p=9999999999999999999999999
        "cD0tMQ%3D%3D",  # p=-1
        "cD3vvJE%3D",  # p=１ (a non-ASCII digit)
    ],
)
def test_crafted_cursors_are_404(staff, cursor):
    make_project()
    for path in ("projects", "comparisons", "labels", "jobs"):
        response = staff.get(f"/api/v1/{path}/?cursor={cursor}")
        assert response.status_code == 404, (path, response.content)
        assert response.json()["detail"] == "Invalid cursor"


def test_real_cursor_still_pages(staff):
    for _ in range(3):
        make_project()
    first = staff.get("/api/v1/projects/?page_size=2").json()
    second = staff.get(first["next"]).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [65, 5000, 100_000])
def test_deep_nesting_is_a_400_everywhere(staff, levels):
    project = make_project()
    user = make_user(project=project)
    (c,) = make_comparisons(project, 1)
    annotator = APIClient()
    annotator.force_authenticate(user)
    lease = annotator.post(f"/api/v1/projects/{project.pk}/next/").json()
    body = '{"rm_config": {"x": ' + _deep(levels) + "}}"
    for client, url, method in [
        (staff, "/api/v1/projects/", "post"),
        (staff, f"/api/v1/projects/{project.pk}/", "patch"),
        (staff, f"/api/v1/comparisons/{c.pk}/", "patch"),
        (staff, "/api/v1/prompts/", "post"),
        (annotator, f"/api/v1/assignments/{lease['assignment_id']}/label/", "post"),
    ]:
        response = getattr(client, method)(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.content[:200])
        assert "nested deeper than 64" in response.json()["detail"]


def test_nesting_within_the_limit_is_parsed(staff):
    project = make_project()
    body = {"name": "ok", "rm_config": {"x": json.loads(_deep(60))}}
    response = staff.patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    # Parsed, then refused by the field's own check (an unknown key), not the parser.
    assert response.status_code == 400
    assert "x: unknown setting" in response.json()["rm_config"][0]


@pytest.mark.parametrize(
    "body",
    [
        {"rm_config": {"num_epochs": 1, "note": "a\u0000b"}},
        {"pair_mix": {"random\u0000": 1}},
        {"name": "nul\u0000name"},
        {"guidelines": "\u0000"},
    ],
)
def test_nul_is_refused(staff, body):
    project = make_project()
    response = staff.patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert response.status_code == 400, response.content
    assert "NUL" in json.dumps(response.json()) or "Null characters" in json.dumps(
        response.json()
    )
    assert "\x00" not in Project.objects.get(pk=project.pk).name


def test_nul_in_a_label_rationale_is_refused():
    project = make_project()
    user = make_user(project=project)
    make_comparisons(project, 1)
    client = APIClient()
    client.force_authenticate(user)
    lease = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    response = client.post(
        f"/api/v1/assignments/{lease['assignment_id']}/label/",
        {"choice": "a", "strength": 2, "rationale": "x\u0000"},
        format="json",
    )
    assert response.status_code == 400, response.content


def test_body_over_the_size_limit_is_a_json_413(staff, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    project = make_project()
    big = {"guidelines": "x" * 4096}
    for content_type, data in [
        ("application/json", json.dumps(big)),
        ("application/x-www-form-urlencoded", "guidelines=" + "x" * 4096),
    ]:
        response = staff.patch(
            f"/api/v1/projects/{project.pk}/", data, content_type=content_type
        )
        assert response.status_code == 413, (content_type, response.content[:200])
        assert response["Content-Type"] == "application/json"
        assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]


def test_unknown_api_path_is_json():
    response = APIClient().get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "body",
    [
        b'{"choice": "a", "strength": 2, "rationale": ' + _deep(5000).encode() + b"}",
        b'{"choice": "a", "strength": 2, "rationale": "x\\u0000y"}',
    ],
    ids=["deep", "nul"],
)
def test_the_served_app_refuses_them_on_the_label_endpoint_too(body):
    """Through config.wsgi's application (the fast lane in front of Django), not
    only through the test client: still a 400, and nothing stored."""
    import io

    from rest_framework.authtoken.models import Token

    from config.wsgi import application
    from labelapp.models import Label

    project = make_project(overlap=1)
    make_comparisons(project, 1)
    user = make_user(project=project)
    key = Token.objects.create(user=user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    lease = client.post(f"/api/v1/projects/{project.pk}/next/").json()
    seen = {}
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/api/v1/assignments/{lease['assignment_id']}/label/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Token {key}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
    }
    content = b"".join(
        application(environ, lambda status, headers, exc=None: seen.update(s=status))
    )
    assert seen["s"].startswith("400"), (seen, content[:300])
    assert b"NUL" in content or b"nested deeper" in content
    assert Label.objects.count() == 0
