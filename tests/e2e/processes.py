"""Real processes for end-to-end tests: a Django server, Celery workers and beat,
all pointed at the pytest-django test database and a dedicated Redis database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from django.conf import settings
from django.db import connection

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], object], *, timeout: float, what: str, every: float = 0.5
):
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """Starts and stops the app's processes; every one is killed at teardown."""

    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        # The test process enqueues through the same broker the workers read, so
        # both use REDIS_URL; stale messages of earlier tests are dropped first.
        self.redis_url = settings.REDIS_URL
        redis.Redis.from_url(self.redis_url).flushdb()
        self.tmp = tmp_path
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{auth}@{host}/{db['NAME']}",
            "REDIS_URL": self.redis_url,
            "ARTIFACTS_DIR": str(settings.ARTIFACTS_DIR),
            "DEBUG": "1",
            "PAIRLOOP_BEAT_SECONDS": "2",
            # Short, so a killed worker is noticed soon; long enough that a worker
            # on a loaded machine (or reconnecting after a blip) is not taken for
            # dead: the heartbeat beats every second.
            "PAIRLOOP_JOB_STALE_SECONDS": "15",
            "PAIRLOOP_JOB_HEARTBEAT_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
            # One compute thread per process: on a loaded machine OpenMP's spinning
            # threads slowed a tiny training job by two orders of magnitude.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = ""

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_web(self) -> str:
        port = free_port()
        self._start(
            "web",
            [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{port}",
                "--noreload",
            ],
        )
        self.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return (
                    httpx.get(f"{self.url}/admin/login/", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=90, what="the web server")
        return self.url

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        # solo pool: the task runs in the worker process itself, so kill -9 on that
        # process is a worker dying mid-job.
        return self._start(
            name,
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "-Q", "default,gpu", "--pool", "solo", "--loglevel", "INFO",
                "-n", f"{name}-{os.getpid()}@%h", "--without-gossip",
                "--without-mingle",
            ],
        )  # fmt: skip

    def start_beat(self) -> subprocess.Popen:
        return self._start(
            "beat",
            [
                sys.executable, "-m", "celery", "-A", "config", "beat",
                "--loglevel", "INFO", "-s", str(self.tmp / "beat-schedule"),
            ],
        )  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name == "web" else signal.SIGKILL)
