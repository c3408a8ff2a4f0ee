"""The local runner starts a real PostgreSQL and Redis from pip packages."""

from __future__ import annotations

import socket

import psycopg
import pytest
import redis

from config import devservices


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_embedded_services_start_bind_locally_and_stop(tmp_path, monkeypatch):
    pg_port, redis_port = _free_port(), _free_port()
    monkeypatch.setattr(devservices, "VAR", tmp_path)
    monkeypatch.setattr(devservices, "PG_PORT", pg_port)
    monkeypatch.setattr(devservices, "REDIS_PORT", redis_port)
    with devservices.services({"PATH": "/usr/bin"}) as env:
        assert (
            env["DATABASE_URL"] == f"postgres://postgres@127.0.0.1:{pg_port}/pairloop"
        )
        assert env["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
        url = f"postgresql://postgres@127.0.0.1:{pg_port}/pairloop"
        with psycopg.connect(url) as conn:
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
            assert listen == "127.0.0.1"
        client = redis.Redis.from_url(env["REDIS_URL"])
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("kept", "1")
        assert (tmp_path / "postgres" / "PG_VERSION").exists()
    # Both stopped on exit.
    for port in (pg_port, redis_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    # A second start reuses the data under var/.
    with devservices.services({"PATH": "/usr/bin"}) as env:
        assert redis.Redis.from_url(env["REDIS_URL"]).get("kept") == b"1"


def test_set_variables_start_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(devservices, "VAR", tmp_path)
    given = {"DATABASE_URL": "postgres://x@127.0.0.1:1/db", "REDIS_URL": "redis://h/1"}
    with devservices.services(given) as env:
        assert env["DATABASE_URL"] == given["DATABASE_URL"]
        assert env["REDIS_URL"] == given["REDIS_URL"]
    assert not (tmp_path / "postgres").exists()
    assert not (tmp_path / "redis").exists()
