"""Settings are parsed strictly: a malformed variable stops start-up, naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env, parse_database_url, parse_redis_url
from tests.conftest import ROOT

GOOD = {
    "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_database_url_parsed():
    db = parse_database_url(
        "DATABASE_URL", "postgresql://al%40x:s3cret@db.local:6543/pl"
    )
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "al@x",
        "s3cret",
        "db.local",
        "6543",
        "pl",
    )


@pytest.mark.parametrize(
    "value, problem",
    [
        ("sqlite:///db.sqlite3", "PostgreSQL only"),
        ("postgres://u@host:99999/db", "port"),
        ("postgres://u@host:5432/", "database name"),
    ],
)
def test_bad_database_url_names_variable(value, problem):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL") as err:
        parse_database_url("DATABASE_URL", value)
    assert problem in str(err.value)


def test_password_is_redacted_in_errors():
    with pytest.raises(ImproperlyConfigured) as err:
        parse_database_url("DATABASE_URL", "mysql://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("value", ["http://x", "redis://h:port/0", "redis://h/abc"])
def test_bad_redis_url(value):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        parse_redis_url("REDIS_URL", value)


def test_env_bool_and_list_are_strict():
    env = Env({"DEBUG": "maybe", "ALLOWED_HOSTS": "a.com,,b.com", "N": "x"})
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe'"):
        env.bool("DEBUG", default=False)
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS"):
        env.list("ALLOWED_HOSTS", default=[])
    with pytest.raises(ImproperlyConfigured, match="N='x' is not an integer"):
        env.int("N", default=1)
    assert Env({"DEBUG": "on"}).bool("DEBUG", default=False) is True


def _manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # (DJANGO_ALLOW_ASYNC_UNSAFE, set for the browser tests, is a deploy warning.)
    dropped = {"DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **GOOD, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_startup_fails_without_secret_key_when_debug_off():
    result = _manage(["check"], {"DEBUG": "0", "ALLOWED_HOSTS": "example.com"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_startup_fails_on_malformed_debug():
    result = _manage(["check"], {"DEBUG": "yes please"})
    assert result.returncode != 0
    assert "DEBUG='yes please' is not a boolean" in result.stderr


def test_deploy_check_is_clean_with_debug_off():
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {
            "DEBUG": "0",
            "SECRET_KEY": "k" * 20 + "Q9-x_" * 8,
            "ALLOWED_HOSTS": "example.com",
        },
    )
    assert result.returncode == 0, result.stderr


def test_prepared_statements_get_generic_plans_unless_preparing_is_off():
    db = parse_database_url("DATABASE_URL", "postgres://u@h/db?options=-c%20x%3D1")
    assert db["OPTIONS"]["prepare_threshold"] == 2
    assert db["OPTIONS"]["options"] == "-c x=1 -c plan_cache_mode=force_generic_plan"
    off = parse_database_url("DATABASE_URL", "postgres://u@h/db?prepare_threshold=off")
    assert off["OPTIONS"] == {"prepare_threshold": None}
