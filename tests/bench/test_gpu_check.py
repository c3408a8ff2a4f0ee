"""bench/gpu_check.py: its --dry-run runs every stage on the CPU (so the GPU check
cannot rot between GPU machines) and its time budget skips what would not fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
MEASURES = ("generate", "engine", "rm-train-bf16", "vllm")


@pytest.mark.slow
def test_dry_run_measures_everything_and_writes_the_table_and_json(tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["setup"]["dry_run"] is True
    assert report["setup"]["device"] == "cpu"
    assert report["models"]["tiny"]["params"] > 0
    rows = {(r["model"], r["measure"]): r for r in report["rows"]}
    assert set(rows) == {("tiny", m) for m in MEASURES}
    for measure in ("generate", "engine", "rm-train-bf16"):
        row = rows["tiny", measure]
        assert row["status"] == "ok", row
        assert row["value"] > 0, row
    sampling = rows["tiny", "engine"]["detail"]
    assert sampling["n"] == 8
    assert all(r["tokens"] > 0 for r in sampling["runs"])
    assert rows["tiny", "engine"]["ratio"] > 0
    rm = rows["tiny", "rm-train-bf16"]["detail"]
    assert rm["tokens_per_s"] > 0
    assert rm["timed_steps"] >= 1
    # vLLM is not a project dependency: the row says why it has no number.
    vllm = rows["tiny", "vllm"]
    assert vllm["status"] in ("ok", "vllm not importable", "skipped: needs CUDA")
    assert 0 < report["elapsed_s"] < 120
    # One table, every measure in it, and the elapsed time.
    table = run.stdout[run.stdout.index("\nmodel ") :]
    assert "params" in table and "ratio" in table
    for measure in MEASURES:
        assert measure in table
    assert "elapsed" in table


def test_a_spent_budget_skips_every_stage_and_says_so(tmp_path: Path, capsys):
    sys.path.insert(0, str(REPO))
    from bench import gpu_check

    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry-run", "--budget-s", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    status = {r["measure"]: r["status"] for r in rows}
    assert status["generate"].startswith("skipped: time budget")
    assert status["engine"].startswith("skipped: time budget")
    assert status["rm-train-bf16"] == "skipped: no model"
    assert "vllm" in status
    assert "skipped: time budget" in capsys.readouterr().out
