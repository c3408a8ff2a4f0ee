import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.models import ModelRefError, resolve_model_ref

from .conftest import save_tiny_base, synthetic_pairs

REPO = Path(__file__).resolve().parents[2]


def test_builtin_minilm_resolves_offline() -> None:
    path = resolve_model_ref("builtin:minilm-l6")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


@pytest.mark.parametrize("ref", ["builtin:nope", "./no/such/dir", "nobody/no-model"])
def test_unknown_refs_raise_clear_error(ref: str) -> None:
    with pytest.raises(ModelRefError, match=r"no|unknown"):
        resolve_model_ref(ref)


def test_local_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelRefError, match=r"config\.json"):
        resolve_model_ref(str(tmp_path))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    with path.open("w") as fh:
        for p in synthetic_pairs(n, seed=seed):
            rec = {
                "messages": list(p.conversation),
                "response_a": p.response_a,
                "response_b": p.response_b,
                "p_a": p.p_a,
                "strength": p.strength,
                "id": p.id,
            }
            fh.write(json.dumps(rec) + "\n")
    return path


def test_cli_train_and_eval(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", "decoder")
    pairs = write_pairs(tmp_path / "train.jsonl", 96)
    extra = write_pairs(tmp_path / "extra.jsonl", 40, seed=9)
    out = tmp_path / "v1"
    r = run_cli(
        "train-rm", "--pairs", str(pairs), "--eval-pairs", str(extra),
        "--base", str(base), "--out", str(out), "--epochs", "2", "--lr", "3e-3",
        "--batch-size", "16", "--max-length", "64",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "extra_eval" in r.stdout and "accuracy" in r.stdout
    assert (out / "pairloop.json").is_file()
    r = run_cli("eval-rm", "--model", str(out), "--pairs", str(extra))
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n"] == 40
    assert {"accuracy", "log_loss", "ece", "accuracy_by_strength"} <= set(metrics)


def test_cli_errors_exit_2_before_training(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "train.jsonl", 4)
    r = run_cli(
        "train-rm", "--pairs", str(pairs), "--base", "builtin:nope",
        "--out", str(tmp_path / "v"),
    )  # fmt: skip
    assert r.returncode == 2 and "unknown builtin model" in r.stderr
    assert not (tmp_path / "v").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response_a": "x", "response_b": "y", "p_a": 2}\n')
    r = run_cli(
        "train-rm", "--pairs", str(bad), "--base", "builtin:minilm-l6",
        "--out", str(tmp_path / "v"),
    )  # fmt: skip
    assert r.returncode == 2 and f"{bad}:1" in r.stderr and "p_a" in r.stderr
    r = run_cli("eval-rm", "--model", str(tmp_path), "--pairs", str(pairs))
    assert r.returncode == 2 and "pairloop.json" in r.stderr
