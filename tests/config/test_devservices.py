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


def _wait_http(url: str, timeout: float) -> int:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_serves_the_app_and_ctrl_c_stops_everything(tmp_path):
    """`make run`'s runner: embedded services, migrate, first-run accounts and demo,
    web + worker + beat; SIGINT stops every process; a second run reuses ./var."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from tests.conftest import ROOT

    web_port, pg_port, redis_port = _free_port(), _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        PAIRLOOP_VAR_DIR=str(tmp_path),
        PAIRLOOP_PG_PORT=str(pg_port),
        PAIRLOOP_REDIS_PORT=str(redis_port),
        DEBUG="1",
    )
    cmd = [sys.executable, "-m", "config.devservices", "run", "--port", str(web_port)]

    def run_once() -> str:
        log = tmp_path / "run.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            status = _wait_http(f"http://127.0.0.1:{web_port}/admin/login/", 180)
            assert status == 200
            children = psutil.Process(proc.pid).children(recursive=True)
            names = " ".join(" ".join(c.cmdline()) for c in children)
            assert "runserver" in names and "worker" in names and "beat" in names
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0  # a clean stop
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        # The embedded servers are stopped too: no process still works on our
        # var/ (ports are not checked: on a busy machine another program may take
        # a freed port from the ephemeral range at once).
        assert not (tmp_path / "postgres" / "postmaster.pid").exists()
        leftovers = [
            p.info["cmdline"]
            for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info["cmdline"] or [])
        ]
        assert leftovers == []
        return log.read_text()

    first = run_once()
    assert "admin:     admin / " in first and "annotator: annotator / " in first
    assert "demo project: 'Demo: helpful answers'" in first
    second = run_once()
    assert "accounts exist already" in second
    assert "admin:     admin / " not in second
