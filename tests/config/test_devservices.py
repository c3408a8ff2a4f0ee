"""The local runner starts a real PostgreSQL and Redis from pip packages."""

from __future__ import annotations

import socket
import time

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


def test_redis_answers_once_started_even_while_a_large_file_loads(tmp_path):
    # Redis listens before it has replayed its append-only file and answers
    # LOADING until then; start() must return only once it answers commands (a
    # second `make run` with a big var/redis, or a test right after a restart,
    # met BusyLoadingError).
    server = devservices.EmbeddedRedis(tmp_path, _free_port())
    client = redis.Redis.from_url(server.start())
    try:
        client.execute_command("DEBUG", "POPULATE", "1000000")
        client.bgrewriteaof()
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.05)
    finally:
        server.stop()
    client = redis.Redis.from_url(server.start())
    try:
        assert client.dbsize() == 1_000_000  # no LOADING error
    finally:
        server.stop()


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
def test_run_serves_the_app_and_ctrl_c_stops_everything(var_dir):
    """`make run`'s runner: embedded services, migrate, first-run accounts and demo,
    web + worker + beat, then a box with the URL, the accounts and the service URLs;
    `./pairloop manage` works against it while it runs; SIGINT stops every process;
    a second run reuses ./var."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.conftest import ROOT

    tmp_path = var_dir
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
            # The documented way to run management commands meanwhile.
            made = subprocess.run(
                [str(ROOT / "pairloop"), "manage", "create_user", "bob", "--token"],
                env={k: v for k, v in env.items() if k != "DEBUG"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert made.returncode == 0, made.stderr
            assert len(made.stdout.strip()) == 40
            assert "using the running services" in made.stderr
            deadline = time.monotonic() + 150
            while "Pairloop is up at" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
            # The runner publishes where it serves, so ./pairloop manage's HTTP
            # commands reach it on this (non-default) port without --url.
            state = json.loads((tmp_path / devservices.STATE_FILE).read_text())
            assert state["PAIRLOOP_URL"] == f"http://127.0.0.1:{web_port}"
            sim = subprocess.run(
                [str(ROOT / "pairloop"), "manage", "simulate_annotators",
                 "--project", "1", "--annotators", "1", "--oracle", "length",
                 "--max-labels", "2"],
                env={k: v for k, v in env.items() if k != "DEBUG"},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert sim.returncode == 0, sim.stderr[-3000:]
            assert "2 labels by 1 simulated annotators" in sim.stdout
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
    frame = first[first.index("Pairloop is up at") :]
    assert f"http://127.0.0.1:{web_port}/" in frame
    assert "admin:     admin / " in frame  # the passwords again, in the box
    assert f"DATABASE_URL=postgres://postgres@127.0.0.1:{pg_port}/pairloop" in frame
    assert f"REDIS_URL=redis://127.0.0.1:{redis_port}/0" in frame
    assert "XDG_RUNTIME_DIR" not in first
    second = run_once()
    assert "accounts exist already" in second
    assert "admin:     admin / " not in second
    assert "./pairloop manage reset_password admin" in second


@pytest.fixture
def var_dir():
    """A var/ outside pytest's base temporary directory: pytest resets that one to
    mode 0700 whenever a run starts (other runs on the machine too), which locks the
    embedded PostgreSQL's server user out of its data directory mid-test."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="pairloop-var-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runner_env(tmp_path, pg_port: int, redis_port: int) -> dict[str, str]:
    """A newcomer's shell: no service URLs, no DEBUG, no SECRET_KEY."""
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}
    }
    env.update(
        PAIRLOOP_VAR_DIR=str(tmp_path),
        PAIRLOOP_PG_PORT=str(pg_port),
        PAIRLOOP_REDIS_PORT=str(redis_port),
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exec_attaches_to_the_services_a_runner_serves(var_dir):
    """While a runner (here an `exec` holding the services, as `make run` does)
    serves var/, `./pairloop manage ...` and `python -m config.devservices exec --
    python manage.py ...` use its servers instead of failing on the taken port;
    the child gets DATABASE_URL, REDIS_URL, DEBUG=1 and the dev SECRET_KEY."""
    import json
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    tmp_path = var_dir
    pg_port, redis_port = _free_port(), _free_port()
    env = _runner_env(tmp_path, pg_port, redis_port)
    stop = tmp_path / "stop"
    holder_cmd = [
        sys.executable, "-m", "config.devservices", "exec", "--", sys.executable,
        "-c", f"import pathlib, time\nwhile not pathlib.Path({str(stop)!r}).exists():"
        " time.sleep(0.2)",
    ]  # fmt: skip
    holder_log = tmp_path / "holder.log"
    with holder_log.open("w") as out:
        holder = subprocess.Popen(holder_cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        state_file = tmp_path / devservices.STATE_FILE
        deadline = time.monotonic() + 120
        while not state_file.exists() and time.monotonic() < deadline:
            assert holder.poll() is None, holder_log.read_text()
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        assert state["pid"] == holder.pid
        assert state["DATABASE_URL"] == (
            f"postgres://postgres@127.0.0.1:{pg_port}/pairloop"
        )
        assert state["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"

        def run(*cmd: str) -> subprocess.CompletedProcess:
            # ./pairloop works from any directory; `python -m config...` from the
            # checkout, as the README runs it.
            cwd = tmp_path if cmd[0].endswith("pairloop") else ROOT
            return subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240
            )

        probe = run(
            sys.executable, "-m", "config.devservices", "exec", "--", sys.executable,
            "-c", "import os; print(os.environ['DATABASE_URL'],"
            " os.environ['REDIS_URL'], os.environ['DEBUG'],"
            " len(os.environ['SECRET_KEY']))",
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split() == [
            state["DATABASE_URL"], state["REDIS_URL"], "1", str(
                len((tmp_path / "secret_key").read_text().strip())
            )
        ]  # fmt: skip
        assert "using the running services" in probe.stderr
        assert "already taken" not in probe.stderr

        pairloop = str(ROOT / "pairloop")
        migrate = run(pairloop, "manage", "migrate", "--no-input")
        assert migrate.returncode == 0, migrate.stderr
        made = run(pairloop, "manage", "create_user", "alice", "--token")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert len(token) == 40
        again = run(
            sys.executable, "-m", "config.devservices", "exec", "--",
            sys.executable, str(ROOT / "manage.py"), "create_user", "alice", "--token",
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == token  # the same database
        reset = run(pairloop, "manage", "reset_password", "alice")
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.startswith("alice / ")
        lost = run(pairloop, "manage", "reset_password", "nobody")
        assert lost.returncode != 0
        assert "no user 'nobody'" in lost.stderr and "alice" in lost.stderr
        # The holder is still serving: nothing was stopped by the attached runs.
        assert holder.poll() is None
        assert devservices._answers(state["DATABASE_URL"], state["REDIS_URL"])
    finally:
        stop.touch()
        assert holder.wait(60) == 0, holder_log.read_text()
    # The runner that started the services stopped them and withdrew its state.
    assert not state_file.exists()
    assert devservices.read_state(tmp_path) is None


def test_a_stale_state_file_is_ignored(tmp_path, monkeypatch):
    """A state file left by a killed runner (pid gone) does not attach."""
    import json
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / devservices.STATE_FILE).write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "DATABASE_URL": "postgres://postgres@127.0.0.1:1/pairloop",
                "REDIS_URL": "redis://127.0.0.1:1/0",
            }
        )
    )
    assert devservices.read_state(tmp_path) is None


def test_the_summary_box_names_url_accounts_and_the_reset_command():
    env = {"DATABASE_URL": "postgres://p@h:1/d", "REDIS_URL": "redis://h:2/0"}
    first = devservices.box(
        devservices._summary(
            env, "http://127.0.0.1:8000/", ["  admin:     admin / pw1"], True
        )
    )
    assert "Pairloop is up at http://127.0.0.1:8000/" in first
    assert "admin:     admin / pw1" in first
    assert "DATABASE_URL=postgres://p@h:1/d" in first
    widths = {len(line) for line in first.splitlines()}
    assert len(widths) == 1  # a closed frame
    later = devservices.box(
        devservices._summary(env, "http://127.0.0.1:8000/", [], True)
    )
    assert "./pairloop manage reset_password admin" in later


def test_exec_leaves_debug_alone_against_given_services(tmp_path):
    """With DATABASE_URL given (production, CI) exec does not switch DEBUG on; on
    the embedded servers it does (see the attach test)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY"}}
    env.update(
        DATABASE_URL="postgres://x@127.0.0.1:1/d",
        REDIS_URL="redis://127.0.0.1:1/0",
        PAIRLOOP_VAR_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "config.devservices", "exec", "--", "sh", "-c",
         'echo "${DEBUG:-unset} ${SECRET_KEY:-unset}"'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["unset", "unset"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_run_with_debug_off_serves_static_files_like_compose(var_dir):
    """Issue 14 item 1: `make run` with DEBUG=0 is production-like. The web process
    is docker-compose's (collectstatic, then gunicorn), so the pages' hashed static
    files are served by WhiteNoise with a far-future cache; before, it was runserver,
    which serves no static files with DEBUG off (and a page naming a hashed file
    that was never collected is a 500)."""
    import re
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import psutil

    from tests.conftest import ROOT

    web_port = _free_port()
    env = _runner_env(var_dir, _free_port(), _free_port())
    env.update(
        DEBUG="0",
        SECRET_KEY="devservices-production-test-" + "q8Zr_" * 8,
        ALLOWED_HOSTS="127.0.0.1",
        TRUST_X_FORWARDED_PROTO="1",  # as behind compose's TLS proxy
        STATIC_ROOT=str(var_dir / "staticfiles"),
    )
    proxy = {"X-Forwarded-Proto": "https"}
    url = f"http://127.0.0.1:{web_port}"
    cmd = [sys.executable, "-m", "config.devservices", "run", "--port", str(web_port)]
    log = var_dir / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 300
        while "Pairloop is up at" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert "DEBUG=0: production-like" in log.read_text()
        names = " ".join(
            " ".join(c.cmdline())
            for c in psutil.Process(proc.pid).children(recursive=True)
        )
        assert "gunicorn" in names and "runserver" not in names

        page = httpx.get(f"{url}/login/", headers=proxy, timeout=30)
        assert page.status_code == 200, page.text[:500]
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert assets, page.text[:1000]
        for path in assets:
            assert re.search(r"\.[0-9a-f]{12}\.(js|css|svg|png|ico)$", path), path
            asset = httpx.get(f"{url}{path}", headers=proxy, timeout=30)
            assert asset.status_code == 200, path
            assert "immutable" in asset.headers["Cache-Control"], path
        # Plain http is sent to https, as in production.
        plain = httpx.get(f"{url}/login/", timeout=30)
        assert plain.status_code == 301
        assert plain.headers["Location"].startswith("https://")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if str(var_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
