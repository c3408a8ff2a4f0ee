"""A real server subprocess for the browser tests that kill it (the browser and
page fixtures are in tests/browser.py, shared by every test package).

Playwright's sync API runs an asyncio loop in the test thread; Django refuses ORM
calls from a thread with a running loop unless told it is fine (it is: the loop only
drives the browser).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.processes import Processes

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``manage.py runserver`` on a fixed port, against the test database, so a test
    can kill -9 it and start it again at the same address."""

    def __init__(self, database_name: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        db = os.environ.get("DATABASE_URL", "")
        base = db.rsplit("/", 1)[0] if db else "postgres://postgres@127.0.0.1:5432"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{base}/{database_name}",
            "DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "var" / f"e2e-server-{port}.log"

    def start(self, timeout: float = 30.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    "--noreload",
                    "--skip-checks",
                    f"127.0.0.1:{self.port}",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/login/", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError(f"server did not come up in {timeout}s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests are cut."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def is_up(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def procs(transactional_db, tmp_path, settings):
    """Real runserver / Celery worker / beat processes (tests.e2e.processes),
    stopped after the test; their artifacts go under the test's tmp_path."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    p = Processes(tmp_path)
    yield p
    p.stop_all()
