"""Token authentication (labelapp.api.authentication): DRF's contract, one query."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labelapp.api.authentication import TokenAuthentication

from .conftest import make_user

pytestmark = pytest.mark.django_db


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_valid_token_is_the_user_and_the_token(django_assert_num_queries):
    user = make_user("tok")
    token = Token.objects.create(user=user)
    with django_assert_num_queries(1):
        got_user, got_token = TokenAuthentication().authenticate_credentials(token.key)
    assert got_user == user and got_user.username == "tok"
    assert got_token == token and got_token.user is got_user
    assert got_token.created == token.created
    assert _client(token.key).get("/api/v1/me/").json()["username"] == "tok"


def test_unknown_token_and_inactive_user_are_refused():
    unknown = _client("0" * 40).get("/api/v1/me/")
    assert unknown.status_code in (401, 403)
    assert unknown.json()["detail"] == "Invalid token."
    user = make_user()
    token = Token.objects.create(user=user)
    user.is_active = False
    user.save()
    inactive = _client(token.key).get("/api/v1/me/")
    assert inactive.status_code == unknown.status_code
    assert inactive.json()["detail"] == "User inactive or deleted."
