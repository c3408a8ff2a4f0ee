"""Token authentication (settings: REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES).

Same contract as DRF's TokenAuthentication (same header, same errors, same user and
token objects; drf-spectacular documents it as DRF's, it matches subclasses), but the
token -> user lookup is one hand-written statement: the ORM's ``select_related().get()``
costs ~0.3 ms of Python per request, several times the query itself, and the
annotation endpoints (``next``, ``label``) authenticate twice per label.

Each process also remembers a token's row for ``API_TOKEN_CACHE_SECONDS`` (settings,
default 5; 0 turns it off), so an annotator labelling at speed costs no token query
at all. The bound on staleness: a token deleted, or a user deactivated, in another
process keeps working in this one for at most that long. Within a process, saving or
deleting any user or token empties the cache at once (signal receivers below)."""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from labelapp.db import loaded, prepared_cursor


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


# key -> (monotonic time it was read, its row); rows, not objects, so every request
# gets its own user instance.
_rows: dict[str, tuple[float, tuple]] = {}
_rows_lock = threading.Lock()
_MAX_CACHED = 10_000


def _row(key: str) -> tuple | None:
    ttl = settings.API_TOKEN_CACHE_SECONDS
    now = time.monotonic()
    hit = _rows.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    sql = _lookup()[0]
    with prepared_cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is not None and ttl > 0:
        with _rows_lock:
            if len(_rows) >= _MAX_CACHED:
                _rows.clear()
            _rows[key] = (now, row)
    return row


@receiver(post_save, sender=Token)
@receiver(post_delete, sender=Token)
@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _forget_rows(**kwargs: Any) -> None:
    with _rows_lock:
        _rows.clear()


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        attnames = _lookup()[1]
        row = _row(key)
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = loaded(get_user_model(), dict(zip(attnames, row[1:], strict=True)))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = loaded(Token, {"key": key, "user_id": user.pk, "created": row[0]})
        token.user = user
        return user, token
