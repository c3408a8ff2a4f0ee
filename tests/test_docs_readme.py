"""The README is the spec: its shell blocks run as written and do what the text says.

- The management blocks (simulated annotators, accounts, the import) run in a second
  terminal beside a real `make run` (tests/docs_run.py): ``./pairloop manage`` and
  ``python -m config.devservices exec`` attach to it. The simulator is told
  ``--follow --max-seconds 1800``; the test lets it label for a while and then stops
  it with Ctrl-C, as a reader would.
- The ML blocks (train-rm, eval-rm, best-of-n, export-hf) run in a scratch
  directory holding links to this checkout's ``.venv`` and ``training/``, so the
  ``var/`` they write is the scratch one. One substitution: ``../shared/data`` becomes
  the absolute path of the shared data (the scratch directory has no ``..`` beside
  the checkout).

The first block (``make run`` / ``make test``) is what runs this test."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT
from tests.docs_run import make_run_session

README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"


def shell_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def block_with(needle: str) -> str:
    found = [b for b in shell_blocks() if needle in b]
    assert len(found) == 1, f"the README should have one sh block with {needle!r}"
    return found[0]


def run_block(block: str, *, cwd: Path, env: dict | None, timeout: float) -> str:
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"README block failed:\n{block}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


def test_every_readme_block_is_covered_here() -> None:
    """A block added to the README must be added to a test here too."""
    covered = (
        "make run",
        "simulate_annotators",
        "train-rm",
        "export-hf",
        "create_user",
        "import_data",
    )
    blocks = shell_blocks()
    assert len(blocks) == len(covered), blocks
    for block in blocks:
        assert sum(needle in block for needle in covered) >= 1, block


def _labels_in_project(conn: psycopg.Connection, project: int) -> int:
    return conn.execute(
        "SELECT count(*) FROM labelapp_label l JOIN labelapp_comparison c "
        "ON c.id = l.comparison_id WHERE c.project_id = %s",
        [project],
    ).fetchone()[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_management_blocks_work_beside_make_run() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the import block reads it")
    with make_run_session() as (_url, env, pg_port):
        db = f"postgresql://postgres@127.0.0.1:{pg_port}/pairloop"

        # Simulated annotators label the demo over the API until stopped.
        simulate = block_with("simulate_annotators")
        assert "--follow" in simulate and "--project 1" in simulate
        with psycopg.connect(db, autocommit=True) as conn:
            before = _labels_in_project(conn, 1)
            proc = subprocess.Popen(
                ["bash", "-c", simulate],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 240
                while _labels_in_project(conn, 1) < before + 10:
                    assert proc.poll() is None, proc.stdout.read()[-3000:]
                    assert time.monotonic() < deadline, "no labels in 240 s"
                    time.sleep(2)
                assert proc.poll() is None  # --follow: still labelling
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

        # The accounts, then the import that makes them members.
        run_block(block_with("create_user"), cwd=ROOT, env=env, timeout=120)
        out = run_block(block_with("import_data"), cwd=ROOT, env=env, timeout=300)
        with psycopg.connect(db) as conn:
            project = conn.execute(
                "SELECT id FROM labelapp_project WHERE name = 'Arena'"
            ).fetchone()
            assert project is not None, out
            comparisons = conn.execute(
                "SELECT count(*) FROM labelapp_comparison WHERE project_id = %s",
                project,
            ).fetchone()[0]
            members = dict(
                conn.execute(
                    "SELECT u.username, m.role FROM labelapp_membership m "
                    "JOIN auth_user u ON u.id = m.user_id WHERE m.project_id = %s",
                    project,
                ).fetchall()
            )
    assert str(project[0]) in out  # the id the README says import_data prints
    assert comparisons > 0  # --make-pairs
    assert members == {"alice": "annotator", "bob": "annotator", "carol": "reviewer"}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_ml_blocks_run_as_written(tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the ML blocks read it")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "training").symlink_to(ROOT / "training")
    ml = block_with("train-rm").replace("../shared/data", str(SHARED_DATA))
    out = run_block(ml, cwd=tmp_path, env=None, timeout=1100)
    version = tmp_path / "var" / "rm-hh"
    assert json.loads((version / "pairloop.json").read_text())["base"]
    # eval-rm's JSON: the 300 pairs after the 300 training read.
    # eval-rm prints its metrics as one JSON line on stdout.
    lines = [line for line in out.splitlines() if line.startswith('{"model"')]
    assert len(lines) == 1, out[-3000:]
    metrics = json.loads(lines[0])
    assert metrics["n"] == 300 and 0.0 <= metrics["accuracy"] <= 1.0
    bon = tmp_path / "var" / "bon"
    stats = json.loads((bon / "stats.json").read_text())
    assert stats, "best-of-n wrote no statistics"
    run_block(block_with("export-hf"), cwd=tmp_path, env=None, timeout=300)
    assert (tmp_path / "var" / "rm-hh-hf" / "config.json").is_file()
