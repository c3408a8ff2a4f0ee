"""Strict parsing of the environment variables Pairloop reads.

Every parser raises ``ImproperlyConfigured`` naming the variable and the bad value,
so a typo stops start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Env:
    environ: Mapping[str, str]

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None else value.strip()

    def bool(self, name: str, *, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean (use one of 1/0, true/false, yes/no)"
        )

    def int(self, name: str, *, default: int, minimum: int | None = None) -> int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={value!r} must be >= {minimum}")
        return number

    def list(self, name: str, *, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        items = [item.strip() for item in value.split(",")]
        if any(not item or " " in item for item in items):
            raise ImproperlyConfigured(
                f"{name}={value!r} must be a comma-separated list without empty "
                "or blank items"
            )
        return items

    def path(self, name: str, *, default: Path) -> Path:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if "\x00" in value:
            raise ImproperlyConfigured(f"{name} contains a NUL byte")
        return Path(value).expanduser().resolve()


def parse_database_url(name: str, value: str) -> dict:
    """``postgres://user:password@host:port/dbname?sslmode=...`` → Django DATABASES entry."""
    parts = urlsplit(value)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: scheme must be postgres:// or postgresql:// "
            "(Pairloop runs on PostgreSQL only)"
        )
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: missing or invalid database name in the path"
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: the port is not a number in 1..65535"
        ) from None
    options: dict = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    # Prepared statements. Django's ORM cursors bind client-side and never prepare;
    # only the queue's hot path (labelapp.db.prepared_cursor) binds server-side, and
    # psycopg prepares a statement there after this many executions on a connection,
    # so PostgreSQL stops re-planning it (planning cost 3-5x execution). Django turns
    # preparing off by default for poolers that cannot carry prepared statements
    # across transactions (PgBouncer < 1.21 in transaction mode): put
    # ?prepare_threshold=off in the URL for those.
    raw_threshold = options.pop("prepare_threshold", "2")
    if raw_threshold.lower() in {"off", "none", ""}:
        options["prepare_threshold"] = None
    elif raw_threshold.isdigit():
        options["prepare_threshold"] = int(raw_threshold)
    else:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: prepare_threshold must be a number or off"
        )
    if options["prepare_threshold"] is not None:
        # Generic plans for the prepared statements (only the hot path's are), from
        # their first execution. Left to choose, PostgreSQL compares the generic
        # plan's estimate with the custom plans it made so far and, depending on
        # the data and the parameter values of those first runs, may keep
        # re-planning a statement on every execution; measured in
        # bench/queue_bench.py, that was 2-5 ms more database CPU per label on
        # some connections. The hot path's SQL is written for generic plans (values
        # that would change the plan are literals, see labelapp.db), so the plan
        # it gets is the one it was written for. Sent as a startup option: no
        # round trip. Poolers that refuse startup options are the ones that need
        # ?prepare_threshold=off anyway, which leaves this out.
        generic = "-c plan_cache_mode=force_generic_plan"
        extra = options.get("options", "")
        options["options"] = f"{extra} {generic}".strip()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dbname,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        # No health check: it costs a ``SELECT 1`` round trip at the start of every
        # request (~10 % of an annotation request's database time). Without it, a
        # connection the server dropped fails one request, and Django then closes it
        # (a request that errored checks its connection at the end).
        "CONN_HEALTH_CHECKS": False,
    }


def parse_redis_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: scheme must be redis://, rediss:// or unix://"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: the port is not a number in 1..65535"
        ) from None
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r}: the database in the path must be a number"
        )
    return value


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


ENV = Env(os.environ)
