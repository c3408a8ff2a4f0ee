"""bench/queue_bench.py at a tiny size, so the benchmark cannot rot: its seeding
wrote the project row by hand and broke silently each time the model gained a
NOT NULL column (found when issue 13's before/after run failed on
``undo_grace_seconds``). The numbers are not judged here (docs/benchmarks.md);
the run must finish with its invariants OK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]


def _server_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    auth = f"{user}:{db['PASSWORD']}" if db.get("PASSWORD") else user
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/postgres"


def test_queue_bench_runs_and_its_invariants_hold(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": _server_url(),
        "REDIS_URL": settings.REDIS_URL,
    }
    out = subprocess.run(
        [sys.executable, "bench/queue_bench.py", "--comparisons", "600",
         "--open-annotators", "3", "--closed-annotators", "3", "--rate", "10",
         "--open-seconds", "2", "--closed-seconds", "2", "--naive-seconds", "1",
         "--warmup-seconds", "1", "--db", f"pl_qsmoke_{os.getpid()}",
         "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "invariants: OK" in out.stdout
    assert "seeded 600 comparisons" in out.stdout
