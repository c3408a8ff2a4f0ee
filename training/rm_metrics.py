"""Reward-model metrics on scored pairs: accuracy with Wilson intervals (per
strength and length-gap bucket), log loss, ECE, reward spread, pick-longer rates,
and the per-pair prediction records of ``eval-rm --predictions``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from training.metrics import (
    length_gap_bucket,
    pick_longer_rate,
    wilson_interval,
    winner_calibration_error,
)

if TYPE_CHECKING:
    from training.rm_data import EncodedPair


def preference_metrics(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    p_a: torch.Tensor,
    strength: torch.Tensor,
    n_bins: int = 10,
    *,
    len_a: Sequence[float] | None = None,
    len_b: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy (with a 95 % Wilson interval, per strength and per length-gap
    bucket), soft log loss, ECE on the predicted winner's confidence, reward
    mean/std, and — given the replies' lengths — the share of pairs where the
    model and where the humans pick the longer reply."""
    r_a, r_b, p_a = r_a.double(), r_b.double(), p_a.double()
    diff = r_a - r_b
    q = torch.sigmoid(diff)
    decided = p_a != 0.5
    # A reward tie counts as half right rather than silently as A or B.
    correct = torch.where(
        diff == 0, torch.full_like(diff, 0.5), ((diff > 0) == (p_a > 0.5)).double()
    )
    log_loss = -(p_a * torch.nn.functional.logsigmoid(diff)) - (
        1 - p_a
    ) * torch.nn.functional.logsigmoid(-diff)
    ece = winner_calibration_error(q.tolist(), p_a.tolist(), bins=n_bins)
    rewards = torch.cat([r_a, r_b])

    def acc(sel: torch.Tensor) -> dict[str, Any]:
        n_sel = int(sel.sum())
        wins = float(correct[sel].sum()) if n_sel else 0.0
        ci = wilson_interval(wins, n_sel)
        return {
            "accuracy": wins / n_sel if n_sel else None,
            "ci95": list(ci) if ci else None,
            "n": n_sel,
        }

    by_strength = {}
    for level in range(1, 5):
        sel = decided & (strength == level)
        if sel.any():
            by_strength[str(level)] = acc(sel)
    n = len(diff)
    overall = acc(decided)
    out: dict[str, Any] = {
        "n": n,
        "n_decided": int(decided.sum()),
        "accuracy": overall["accuracy"],
        "accuracy_ci95": overall["ci95"],
        "accuracy_by_strength": by_strength,
        "log_loss": log_loss.mean().item() if n else None,
        "ece": ece,
        "reward_mean": rewards.mean().item() if n else None,
        "reward_std": rewards.std().item() if n > 1 else None,
    }
    if len_a is not None and len_b is not None:
        buckets = [length_gap_bucket(a, b) for a, b in zip(len_a, len_b, strict=True)]
        by_gap = {}
        for name in sorted(set(buckets)):
            sel = decided & torch.tensor([b == name for b in buckets], dtype=torch.bool)
            if sel.any():
                by_gap[name] = acc(sel)
        dec = decided.tolist()
        la = [x for x, d in zip(len_a, dec, strict=True) if d]
        lb = [x for x, d in zip(len_b, dec, strict=True) if d]
        picks_model = [d > 0 for d, k in zip(diff.tolist(), dec, strict=True) if k]
        picks_human = [p > 0.5 for p, k in zip(p_a.tolist(), dec, strict=True) if k]
        model_rate, n_model = pick_longer_rate(la, lb, picks_model)
        human_rate, _ = pick_longer_rate(la, lb, picks_human)
        out["accuracy_by_length_gap"] = by_gap
        out["pick_longer"] = {"model": model_rate, "human": human_rate, "n": n_model}
    return out


def pair_predictions(
    encoded: Sequence[EncodedPair],
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    head_var: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """One record per pair (``eval-rm --predictions``): rewards, predicted
    P(A ≻ B), the label, and whether the predicted winner is the labelled one."""
    out = []
    for i, e in enumerate(encoded):
        ra, rb = float(r_a[i]), float(r_b[i])
        rec: dict[str, Any] = {
            "id": e.id,
            "r_a": ra,
            "r_b": rb,
            "p_a_pred": 1.0 / (1.0 + math.exp(-(ra - rb))),
            "p_a": e.p_a,
            "strength": e.strength or None,
            "len_a": e.len_a,
            "len_b": e.len_b,
            "correct": None if e.p_a == 0.5 else (ra > rb) == (e.p_a > 0.5),
        }
        if head_var is not None:
            rec["diff_var"] = float(head_var[i])
        out.append(rec)
    return out
