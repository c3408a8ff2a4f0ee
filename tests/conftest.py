"""Fixtures shared by every test package.

Tests run against real services: DATABASE_URL (PostgreSQL) and REDIS_URL (Redis) are
set by `make test` (embedded servers under ./var/ when the variables are unset).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data_file(name: str) -> Path:
    """Path of a file in ../shared/data; skips the test (saying why) when the shared
    folder is absent, as in a user's clone. CI always has it."""
    path = SHARED_DATA / name
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent (a user's clone); {name} is needed")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from ../shared/data")
    return path


@pytest.fixture
def shared_data() -> type:
    class _Shared:
        file = staticmethod(shared_data_file)

    return _Shared


@pytest.fixture(autouse=True)
def _forget_failed_token_counts(request: pytest.FixtureRequest) -> None:
    """The failed-token throttle counts in Redis, across processes and tests; each
    test starts with no failures on record (labelapp.api.authentication)."""
    if "django_db_setup" not in request.fixturenames and not any(
        m.name == "django_db" for m in request.node.iter_markers()
    ):
        return
    from django.conf import settings

    if "throttle" not in getattr(settings, "CACHES", {}):
        return
    import redis

    client = redis.Redis.from_url(settings.CACHES["throttle"]["LOCATION"])
    keys = list(client.scan_iter("*pairloop-throttle*token-failures*", count=1000))
    if keys:
        client.delete(*keys)
