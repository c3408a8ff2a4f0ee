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
deleting any user or token empties the cache at once (signal receivers below).

Failed lookups are throttled per client address (``API_TOKEN_FAILURE_LIMIT`` unknown
tokens per ``API_TOKEN_FAILURE_WINDOW_SECONDS``, counted in the shared "throttle"
cache): past the limit, token lookups from that address answer 429 until the window
ends. Only lookups that miss the process cache are checked, so a valid token in
use costs no extra round trip and is never throttled.

``LoginLockoutBackend`` is django-axes' lockout for the login form (settings:
AXES_*)."""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token
from rest_framework.throttling import BaseThrottle

from labelapp.db import loaded, prepared_cursor

log = logging.getLogger(__name__)


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


def _row(key: str, request: Any = None) -> tuple | None:
    ttl = settings.API_TOKEN_CACHE_SECONDS
    now = time.monotonic()
    hit = _rows.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    failures = _Failures(request)
    failures.refuse_if_over()
    sql = _lookup()[0]
    with prepared_cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is not None and ttl > 0:
        with _rows_lock:
            if len(_rows) >= _MAX_CACHED:
                _rows.clear()
            _rows[key] = (now, row)
    if row is None:
        failures.add()
    return row


class _ClientAddress(BaseThrottle):
    """DRF's client address (REMOTE_ADDR, or X-Forwarded-For behind NUM_PROXIES)."""


class _Failures:
    """Failed token lookups of one client address in the current window. If the
    throttle cache (Redis) is unreachable, lookups go on unthrottled: refusing
    every annotator because a counter is down would be worse."""

    def __init__(self, request: Any) -> None:
        self.key = None
        if request is not None:
            address = _ClientAddress().get_ident(request)
            window = settings.API_TOKEN_FAILURE_WINDOW_SECONDS
            self.key = f"token-failures:{address}:{int(time.time() // window)}"

    def refuse_if_over(self) -> None:
        if self.key is None:
            return
        try:
            count = caches["throttle"].get(self.key, 0)
        except Exception:  # any cache failure: see the docstring
            log.warning("token failure throttle unavailable", exc_info=True)
            return
        if count >= settings.API_TOKEN_FAILURE_LIMIT:
            window = settings.API_TOKEN_FAILURE_WINDOW_SECONDS
            raise exceptions.Throttled(
                wait=window - time.time() % window,
                detail="Too many failed token authentications from your address.",
            )

    def add(self) -> None:
        if self.key is None:
            return
        cache_ = caches["throttle"]
        try:
            cache_.add(self.key, 0, timeout=settings.API_TOKEN_FAILURE_WINDOW_SECONDS)
            cache_.incr(self.key)
        except Exception:
            log.warning("token failure throttle unavailable", exc_info=True)


@receiver(post_save, sender=Token)
@receiver(post_delete, sender=Token)
@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _forget_rows(**kwargs: Any) -> None:
    with _rows_lock:
        _rows.clear()


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, Token] | None:
        self._request = request
        try:
            return super().authenticate(request)
        finally:
            self._request = None

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        attnames = _lookup()[1]
        row = _row(key, getattr(self, "_request", None))
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = loaded(get_user_model(), dict(zip(attnames, row[1:], strict=True)))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = loaded(Token, {"key": key, "user_id": user.pk, "created": row[0]})
        token.user = user
        return user, token


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check (first of AUTHENTICATION_BACKENDS): refuses a
    login for a locked-out username and address, authenticates nobody itself.
    ``authenticate()`` without a request (the shell, Django's test client
    ``login()``) has no address to lock out, so it is let through to the next
    backend instead of being an error."""

    def authenticate(self, request: Any, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)
