"""Login lockout (django-axes) and failed-token throttling (issue 14 item 5): an
attacker guessing passwords or tokens is stopped, an annotator at full speed is not.
Real PostgreSQL (axes' attempt rows) and Redis (the shared failure counter)."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "right-password-7Qz"


def _login(username: str, password: str, ip: str = "10.0.0.1") -> Client:
    client = Client(REMOTE_ADDR=ip)
    client.post("/login/", {"username": username, "password": password})
    return client


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_25_wrong_passwords_lock_the_login(django_user_model, settings):
    assert settings.AXES_FAILURE_LIMIT == 10
    django_user_model.objects.create_user("victim", password=PASSWORD)
    statuses = []
    for i in range(25):
        client = Client(REMOTE_ADDR="10.0.0.1")
        response = client.post(
            "/login/", {"username": "victim", "password": f"wrong-{i}"}
        )
        statuses.append(response.status_code)
    assert statuses[:9] == [200] * 9  # the form again, with its error
    assert set(statuses[10:]) == {429}
    client = _login("victim", PASSWORD)
    assert not _logged_in(client)  # the right password, too late
    # Locked by username and address together: the user from elsewhere, and other
    # users from that address, still log in.
    assert _logged_in(_login("victim", PASSWORD, ip="10.0.0.2"))
    django_user_model.objects.create_user("bystander", password=PASSWORD)
    assert _logged_in(_login("bystander", PASSWORD))


def test_a_few_mistakes_do_not_lock(django_user_model):
    django_user_model.objects.create_user("typo", password=PASSWORD)
    for _ in range(5):
        assert not _logged_in(_login("typo", "nope"))
    assert _logged_in(_login("typo", PASSWORD))
    # A success resets the count (AXES_RESET_ON_SUCCESS).
    for _ in range(9):
        _login("typo", "nope")
    assert _logged_in(_login("typo", PASSWORD))


def _token_client(key: str, ip: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_200_random_tokens_get_429_after_the_limit(settings):
    limit = settings.API_TOKEN_FAILURE_LIMIT
    statuses = [
        _token_client(secrets.token_hex(20), "10.0.1.1").get("/api/v1/me/")
        for _ in range(200)
    ]
    codes = [r.status_code for r in statuses]
    assert codes[:limit] == [403] * limit
    assert set(codes[limit:]) == {429}
    assert int(statuses[-1]["Retry-After"]) > 0
    assert "Too many failed token" in statuses[-1].json()["detail"]
    # Another address is not affected.
    assert _token_client("0" * 40, "10.0.1.2").get("/api/v1/me/").status_code == 403


def test_counted_across_processes_in_redis(settings):
    """Not a per-process dict: the count lives in the shared throttle cache."""
    from django.core.cache import caches

    _token_client("f" * 40, "10.0.2.1").get("/api/v1/me/")
    keys = [
        k
        for k in caches["throttle"]._cache.get_client().scan_iter()
        if b"10.0.2.1" in k
    ]
    assert len(keys) == 1


def test_an_annotator_at_full_speed_is_never_throttled(settings):
    project = make_project(overlap=1)
    make_comparisons(project, 60)
    user = make_user(project=project)
    key = Token.objects.create(user=user).key
    client = _token_client(key, "10.0.3.1")
    labelled = 0
    for _ in range(60):
        lease = client.post(f"/api/v1/projects/{project.pk}/next/")
        assert lease.status_code == 200, lease.content
        done = client.post(
            f"/api/v1/assignments/{lease.json()['assignment_id']}/label/",
            {"choice": "a", "strength": 2},
            format="json",
        )
        assert done.status_code == 201, done.content
        labelled += 1
    assert labelled == 60
    # Even with the per-process token cache off (every request a lookup) and more
    # requests than the failure limit.
    settings.API_TOKEN_CACHE_SECONDS = 0
    for _ in range(3 * settings.API_TOKEN_FAILURE_LIMIT):
        assert client.get("/api/v1/me/").status_code == 200
