"""eval-rm's diagnostics (issue 17): winner-confidence ECE, pick-longer rates,
accuracy CI and buckets, per-pair predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from training.__main__ import main
from training.metrics import (
    expected_calibration_error,
    length_gap_bucket,
    pick_longer_rate,
    winner_calibration_error,
)
from training.rm_metrics import preference_metrics

from .conftest import save_tiny_base, synthetic_pairs


def test_winner_ece_equals_a_hand_computation() -> None:
    # q = P(A > B); A is the chosen side in every pair (p_a = 1).
    q = [0.9, 0.8, 0.3, 0.45, 0.65]
    # Winner confidence: 0.9, 0.8, 0.7, 0.55, 0.65; right: 1, 1, 0, 0, 1.
    # Bins of width 0.1: [0.9) {0.9: 1}, [0.8) {0.8: 1}, [0.7) {0.7: 0},
    # [0.6) {0.65: 1}, [0.5) {0.55: 0}.
    hand = (0.1 + 0.2 + 0.7 + 0.35 + 0.55) / 5
    assert winner_calibration_error(q, [1.0] * 5) == pytest.approx(hand)
    # The old ECE binned q itself against p_a = 1: it is then 1 - mean(q).
    assert expected_calibration_error(q, [1.0] * 5) == pytest.approx(1 - sum(q) / 5)
    # Swapping A and B of every pair changes nothing for the winner ECE.
    assert winner_calibration_error([1 - x for x in q], [0.0] * 5) == pytest.approx(
        hand
    )
    # A perfectly calibrated predictor: confidence 0.75, right 3 times in 4.
    assert winner_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)


def test_pick_longer_rate_on_constructed_pairs() -> None:
    len_a = [10, 50, 30, 20, 40]
    len_b = [20, 10, 30, 5, 80]
    # Pair 3 has equal lengths and does not count.
    rate, n = pick_longer_rate(len_a, len_b, [True, True, True, True, False])
    # picks: 10<20 shorter, 50>10 longer, (tie), 20>5 longer, B=80 longer
    assert (rate, n) == (pytest.approx(3 / 4), 4)
    assert pick_longer_rate([], [], []) == (None, 0)
    assert length_gap_bucket(100, 100) == "0-0.1"
    assert length_gap_bucket(100, 200) == "0.3-0.6"
    assert length_gap_bucket(1, 100) == "0.6-1"


def test_preference_metrics_report_ci_buckets_and_both_rates() -> None:
    # Model always prefers the longer reply; humans prefer A (shorter in half).
    len_a = [10, 10, 100, 100]
    len_b = [100, 100, 10, 10]
    r_a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    r_b = torch.tensor([1.0, 1.0, 0.0, 0.0])
    m = preference_metrics(
        r_a, r_b, torch.ones(4), torch.tensor([1, 2, 2, 4]), len_a=len_a, len_b=len_b
    )
    assert m["accuracy"] == 0.5
    lo, hi = m["accuracy_ci95"]
    assert lo < 0.5 < hi
    assert m["pick_longer"] == {"model": 1.0, "human": 0.5, "n": 4}
    assert m["accuracy_by_length_gap"] == {
        "0.6-1": {"accuracy": 0.5, "ci95": pytest.approx(m["accuracy_ci95"]), "n": 4}
    }
    assert m["accuracy_by_strength"]["2"]["n"] == 2
    conf = 1 / (1 + math.exp(-1))
    assert m["ece"] == pytest.approx(abs(conf - 0.5))


def test_eval_rm_writes_predictions(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for p in synthetic_pairs(12, seed=3):
            rec = {
                "prompt": p.conversation[-1]["content"],
                "response_a": p.response_a,
                "response_b": p.response_b,
                "p_a": p.p_a,
            }
            f.write(json.dumps(rec) + "\n")
    base = save_tiny_base(tmp_path / "base", "encoder")
    out = tmp_path / "v1"
    args = ["train-rm", "--pairs", str(pairs), "--base", str(base), "--out", str(out)]
    assert main([*args, "--max-length", "48"]) == 0
    capsys.readouterr()
    preds = tmp_path / "preds.jsonl"
    args = ["eval-rm", "--model", str(out), "--pairs", str(pairs)]
    assert main([*args, "--predictions", str(preds)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"accuracy_ci95", "accuracy_by_length_gap", "pick_longer"} <= set(metrics)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 12
    assert {"id", "r_a", "r_b", "p_a_pred", "p_a", "len_a", "len_b"} <= set(rows[0])
    right = [r["correct"] for r in rows if r["correct"] is not None]
    assert sum(right) / len(right) == pytest.approx(metrics["accuracy"])
    # An existing predictions file is not overwritten: a clear error, exit 2.
    assert main([*args, "--predictions", str(preds)]) == 2
    assert "--predictions" in capsys.readouterr().err


def test_eval_rm_offset_leaves_out_the_first_pairs(tmp_path: Path, capsys) -> None:
    """--offset N --limit M evaluates pairs N..N+M-1 (those a `train-rm --limit N`
    run never saw, as the README's example does); an offset past the end is a
    clear error, not metrics of nothing."""
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for p in synthetic_pairs(12, seed=4):
            rec = {
                "prompt": p.conversation[-1]["content"],
                "response_a": p.response_a,
                "response_b": p.response_b,
                "p_a": p.p_a,
            }
            f.write(json.dumps(rec) + "\n")
    base = save_tiny_base(tmp_path / "base", "encoder")
    out = tmp_path / "v1"
    args = ["train-rm", "--pairs", str(pairs), "--base", str(base), "--out", str(out)]
    assert main([*args, "--max-length", "48", "--limit", "6"]) == 0
    capsys.readouterr()
    every = tmp_path / "every.jsonl"
    evaluate = ["eval-rm", "--model", str(out), "--pairs", str(pairs)]
    assert main([*evaluate, "--predictions", str(every)]) == 0
    capsys.readouterr()
    ids = [json.loads(line)["id"] for line in every.read_text().splitlines()]
    later = tmp_path / "later.jsonl"
    window = ["--offset", "6", "--limit", "4", "--predictions", str(later)]
    assert main([*evaluate, *window]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
    assert [json.loads(line)["id"] for line in later.read_text().splitlines()] == (
        ids[6:10]
    )
    assert main([*evaluate, "--offset", "12"]) == 2
    assert "--offset 12" in capsys.readouterr().err
