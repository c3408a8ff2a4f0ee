"""A real `make run` (embedded PostgreSQL and Redis, migrate, the demo, web + worker +
beat) for the tests that run the documentation's commands as written."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def make_run_session() -> Iterator[tuple[str, dict[str, str], int]]:
    """`make run`'s runner on free ports with its own var/: (url, env, pg port).
    ``env`` is what a second terminal has: ./pairloop manage attaches to this run."""
    var = Path(tempfile.mkdtemp(prefix="pairloop-var-"))
    web, pg, rd = _free_port(), _free_port(), _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}
    }
    env.update(
        PAIRLOOP_VAR_DIR=str(var),
        PAIRLOOP_PG_PORT=str(pg),
        PAIRLOOP_REDIS_PORT=str(rd),
    )
    log = var / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "config.devservices", "run", "--port", str(web)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 240
        while "Pairloop is up at" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield f"http://127.0.0.1:{web}", env, pg
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(var, ignore_errors=True)
