"""The fast lane (labelapp/queue/fastlane.py) answers plain next/label requests itself
and exactly as Django + DRF would: same status, body and headers; and it hands every
other request to Django untouched, having written nothing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from rest_framework.authtoken.models import Token

from labelapp.models import Assignment, Label
from labelapp.queue.fastlane import FastLane

from ..conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)

# Headers that differ per response by nature.
_VOLATILE = {"date", "server"}


class Recording:
    """Django's WSGI app, noting each request it is handed."""

    def __init__(self) -> None:
        self.app = WSGIHandler()
        self.paths: list[str] = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        return self.app(environ, start_response)


@pytest.fixture
def apps():
    django = Recording()
    return FastLane(django), django


def call(app, path, token=None, body=None, **extra):
    raw = (
        body
        if isinstance(body, bytes)
        else (b"" if body is None else json.dumps(body).encode())
    )
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": "application/json",
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Token {token}"
    environ.update(extra)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = int(status.split()[0])
        seen["headers"] = headers

    content = b"".join(app(environ, start_response))
    headers = {k.lower(): v for k, v in seen["headers"] if k.lower() not in _VOLATILE}
    return seen["status"], headers, content


@pytest.fixture
def setup():
    project = make_project(overlap=2, lease_seconds=600)
    make_comparisons(project, 4)
    users = [make_user(project=project) for _ in range(3)]
    tokens = [Token.objects.create(user=u).key for u in users]
    return project, users, tokens


def test_next_answered_by_the_lane_as_django_answers(apps, setup):
    lane, django = apps
    project, _users, tokens = setup
    path = f"/api/v1/projects/{project.pk}/next/"
    # Django leases; the lane's call resumes the same lease (refresh-safe), so the
    # two answers must be identical.
    expected = call(django, path, tokens[0])
    django.paths.clear()
    got = call(lane, path, tokens[0])
    assert django.paths == []  # the lane answered
    assert expected[0] == 200
    assert got == expected
    assert Assignment.objects.filter(state="leased").count() == 1


def test_label_answered_by_the_lane_as_django_answers(apps, setup):
    lane, django = apps
    project, _users, tokens = setup
    nxt = f"/api/v1/projects/{project.pk}/next/"
    body = {"choice": "a", "strength": 3, "rationale": "clear", "duration_ms": 900}

    # The lane labels one assignment, Django another; created answers alike.
    mine = json.loads(call(lane, nxt, tokens[0])[2])["assignment_id"]
    theirs = json.loads(call(django, nxt, tokens[1])[2])["assignment_id"]
    django.paths.clear()
    status, headers, content = call(
        lane, f"/api/v1/assignments/{mine}/label/", tokens[0], body
    )
    assert django.paths == []
    d_status, d_headers, d_content = call(
        django, f"/api/v1/assignments/{theirs}/label/", tokens[1], body
    )
    assert (status, headers) == (d_status, d_headers) == (201, d_headers)
    stored = Label.objects.get(assignment_id=mine)
    assert (stored.strength, stored.rationale, stored.duration_ms) == (3, "clear", 900)
    assert json.loads(content)["id"] == stored.pk
    assert json.loads(content).keys() == json.loads(d_content).keys()

    # A repeat (double click): 200 with the stored label, from both, byte for byte.
    repeat = call(lane, f"/api/v1/assignments/{mine}/label/", tokens[0], body)
    assert repeat[0] == 200
    assert repeat == call(django, f"/api/v1/assignments/{mine}/label/", tokens[0], body)
    assert repeat[2] == content
    assert Label.objects.count() == 2


def test_nothing_left_is_204_from_both(apps, setup):
    lane, django = apps
    project = make_project(overlap=1)
    user = make_user(project=project)
    token = Token.objects.create(user=user).key
    path = f"/api/v1/projects/{project.pk}/next/"
    got = call(lane, path, token)
    assert django.paths == []
    assert got[0] == 204
    assert got == call(django, path, token)


def _declined(apps, path, token, body=None, **extra):
    """The lane hands the request to Django, and the answer is Django's own."""
    lane, django = apps
    labels = Label.objects.count()
    django.paths.clear()
    got = call(lane, path, token, body, **extra)
    assert django.paths == [path], "the lane answered a case it must hand over"
    assert Label.objects.count() == labels or got[0] in (200, 201)
    return got


@pytest.mark.parametrize(
    ("body", "extra", "status"),
    [
        ({"choice": "a", "strength": 9}, {}, 400),  # a field error
        ({"choice": "a", "strength": "2"}, {}, 201),  # coerced by the serializer
        ({"choice": "a", "strength": 2, "rationale": "  pad  "}, {}, 201),  # trimmed
        (b'{"choice": "a", "strength": 2, "duration_ms": NaN}', {}, 400),
        (b"{not json", {}, 400),
        (
            b"choice=a&strength=2",
            {"CONTENT_TYPE": "application/x-www-form-urlencoded"},
            201,
        ),
        ({"choice": "a", "strength": 2}, {"HTTP_ACCEPT": "text/html"}, 201),
        # Declined before the body is read: Django must still get all of it.
        ({"choice": "b", "strength": 2}, {"HTTP_COOKIE": "sessionid=stale"}, 201),
        ({"choice": "a", "strength": 2}, {"HTTP_X_FORWARDED_HOST": "x"}, 201),
        ({"choice": "a", "strength": 2}, {"HTTP_HOST": "evil.example"}, 400),
    ],
)
def test_unusual_label_requests_are_django_s(apps, setup, body, extra, status):
    lane, _django = apps
    project, _users, tokens = setup
    aid = json.loads(call(lane, f"/api/v1/projects/{project.pk}/next/", tokens[0])[2])[
        "assignment_id"
    ]
    path = f"/api/v1/assignments/{aid}/label/"
    got = _declined(apps, path, tokens[0], body, **extra)
    assert got[0] == status, got
    if status == 201:
        label = Label.objects.get(assignment_id=aid)
        assert (label.strength, label.rationale) in {(2, ""), (2, "pad")}
        if isinstance(body, dict):
            assert label.shown_swapped or label.choice == body["choice"]


def test_errors_are_django_s_and_write_nothing(apps, setup):
    lane, django = apps
    project, users, tokens = setup
    nxt = f"/api/v1/projects/{project.pk}/next/"
    aid = json.loads(call(lane, nxt, tokens[0])[2])["assignment_id"]
    label = f"/api/v1/assignments/{aid}/label/"
    ok = {"choice": "b", "strength": 2}

    def same_as_django(path, token, body=None):
        got = _declined(apps, path, token, body)
        assert got == call(django, path, token, body)
        return got[0]

    assert same_as_django(nxt, "not-a-token") == 403  # DRF: session auth first
    outsider = make_user()
    outsider_token = Token.objects.create(user=outsider).key
    assert same_as_django(nxt, outsider_token) == 404  # not a member
    assert same_as_django(f"/api/v1/projects/{2**63}/next/", tokens[0]) == 404
    # Someone else's assignment: not found, and nothing stored.
    assert same_as_django(label, tokens[1], ok) == 404
    users[0].is_active = False
    users[0].save()
    assert same_as_django(label, tokens[0], ok) in (401, 403)
    users[0].is_active = True
    users[0].save()
    assert Label.objects.count() == 0

    # A conflict: labelled once, then a different answer for the same assignment.
    assert call(lane, label, tokens[0], ok)[0] == 201
    conflict = _declined(apps, label, tokens[0], {"choice": "a", "strength": 2})
    assert conflict[0] == 409
    assert conflict == call(django, label, tokens[0], {"choice": "a", "strength": 2})
    assert Label.objects.get().choice in {"a", "b"}
    assert Label.objects.count() == 1


def test_browser_sessions_and_oversized_bodies_are_django_s(apps, setup, settings):
    project, _users, tokens = setup
    nxt = f"/api/v1/projects/{project.pk}/next/"
    cookie = {"HTTP_COOKIE": f"{settings.SESSION_COOKIE_NAME}=abc"}
    assert _declined(apps, nxt, tokens[0], **cookie)[0] == 200
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    big = {"choice": "a", "strength": 2, "rationale": "x" * 2000}
    got = _declined(apps, "/api/v1/assignments/1/label/", tokens[0], big)
    # Django's own refusal of the oversized body (RequestDataTooBig: the API's
    # JSON 413, labelapp.api.errors), not an answer about a body it never saw.
    assert got[0] == 413 and got[1]["content-type"] == "application/json", got


def test_switched_off_everything_goes_to_django(apps, setup, settings):
    settings.API_FAST_LANE = False
    project, _users, tokens = setup
    got = _declined(apps, f"/api/v1/projects/{project.pk}/next/", tokens[0])
    assert got[0] == 200


def test_the_served_app_has_the_lane():
    from config.wsgi import application

    assert isinstance(application, FastLane)


def test_secure_requests_get_django_s_hsts_header(setup, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    # Both read these settings when built (Django's middleware, the lane's setup).
    django = Recording()
    lane = FastLane(django)
    project, _users, tokens = setup
    path = f"/api/v1/projects/{project.pk}/next/"
    https = {"wsgi.url_scheme": "https", "SERVER_PORT": "443"}
    expected = call(django, path, tokens[0], **https)
    django.paths.clear()
    answer = call(lane, path, tokens[0], **https)
    assert django.paths == []
    assert answer == expected
    assert answer[1]["strict-transport-security"] == "max-age=3600; includeSubDomains"


def test_query_strings_are_django_s(apps, setup):
    project, _users, tokens = setup
    got = _declined(
        apps, f"/api/v1/projects/{project.pk}/next/", tokens[0], QUERY_STRING="x=1"
    )
    assert got[0] == 200


def test_a_render_error_after_the_label_commits_is_a_500_not_a_rerun(
    apps, setup, caplog
):
    """Fail closed: the label is stored, so Django must not re-run the request (it
    would find the stored label and answer 200 instead of 201)."""
    lane, django = apps
    project, _users, tokens = setup
    mine = json.loads(call(lane, f"/api/v1/projects/{project.pk}/next/", tokens[0])[2])
    lane._label_data = lambda label: 1 / 0  # a bug in the body builder
    django.paths.clear()
    body = {"choice": "b", "strength": 2}
    status, headers, content = call(
        lane, f"/api/v1/assignments/{mine['assignment_id']}/label/", tokens[0], body
    )
    assert (status, django.paths) == (500, [])
    assert json.loads(content)["code"] == "server_error"
    assert headers["content-security-policy"] and headers["x-frame-options"]
    assert Label.objects.get(assignment_id=mine["assignment_id"]).choice
    assert "after the write committed" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_a_render_error_after_next_leases_is_a_500_not_a_rerun(apps, setup, caplog):
    lane, django = apps
    project, _users, tokens = setup
    lane._setup()
    lane._next_data = lambda payload: 1 / 0
    status, _headers, _content = call(
        lane, f"/api/v1/projects/{project.pk}/next/", tokens[0]
    )
    assert (status, django.paths) == (500, [])
    assert Assignment.objects.filter(state="leased").count() == 1
    assert "answering 500" in caplog.text


def test_a_header_added_to_config_security_reaches_both_paths(setup, monkeypatch):
    from config import security

    extra = [*security.own_headers(), ("Permissions-Policy", "camera=()")]
    monkeypatch.setattr(security, "own_headers", lambda: extra)
    django = Recording()  # both read the list when built
    lane = FastLane(django)
    project, _users, tokens = setup
    path = f"/api/v1/projects/{project.pk}/next/"
    expected = call(django, path, tokens[0])
    django.paths.clear()
    got = call(lane, path, tokens[0])
    assert django.paths == []
    assert got == expected
    assert got[1]["permissions-policy"] == "camera=()"


def test_a_middleware_the_lane_cannot_stand_in_for_turns_it_off(setup, settings):
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.middleware.gzip.GZipMiddleware",
    ]
    django = Recording()
    lane = FastLane(django)
    project, _users, tokens = setup
    got = call(lane, f"/api/v1/projects/{project.pk}/next/", tokens[0])
    assert got[0] == 200
    assert django.paths == [f"/api/v1/projects/{project.pk}/next/"]
