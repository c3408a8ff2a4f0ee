"""Token authentication (settings: REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES).

Same contract as DRF's TokenAuthentication (same header, same errors, same user and
token objects; drf-spectacular documents it as DRF's, it matches subclasses), but the
token -> user lookup is one hand-written statement: the ORM's ``select_related().get()``
costs ~0.3 ms of Python per request, several times the query itself, and the
annotation endpoints (``next``, ``label``) authenticate twice per label."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from labelapp.rows import loaded, prepared_cursor


@cache
def _lookup() -> tuple[str, list[str]]:
    user_model = get_user_model()
    q = connection.ops.quote_name
    fields = user_model._meta.concrete_fields
    sql = (
        f"SELECT t.created, {', '.join(f'u.{q(f.column)}' for f in fields)} "
        f"FROM {q(Token._meta.db_table)} t JOIN {q(user_model._meta.db_table)} u "
        f"ON u.{q(user_model._meta.pk.column)} = t.user_id WHERE t.key = %s"
    )
    return sql, [f.attname for f in fields]


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        sql, attnames = _lookup()
        with prepared_cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = loaded(get_user_model(), dict(zip(attnames, row[1:], strict=True)))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = loaded(Token, {"key": key, "user_id": user.pk, "created": row[0]})
        token.user = user
        return user, token
