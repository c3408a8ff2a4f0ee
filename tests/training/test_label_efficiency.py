"""training.label_efficiency: the simulation behind bench/label_efficiency.py and
the strategy_gain job, on constructed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from training.label_efficiency import (
    HeadConfig,
    accuracy,
    labels_to_reach,
    run_curve,
    summarise,
)


def test_labels_to_reach_interpolates_between_budgets():
    budgets = [100, 200, 300]
    assert labels_to_reach([0.5, 0.6, 0.7], budgets, 0.65) == pytest.approx(250)
    assert labels_to_reach([0.7, 0.6, 0.7], budgets, 0.65) == 100  # first budget
    assert labels_to_reach([0.5, 0.6, 0.62], budgets, 0.65) == math.inf


def test_summarise_compares_every_strategy_with_randoms_final_per_seed():
    budgets = [10, 20, 30]
    curves = {
        "random": [[0.5, 0.6, 0.7], [0.5, 0.5, 0.6]],
        # seed 0 reaches 0.7 at 20, seed 1 reaches 0.6 halfway from 10 to 20
        "gap": [[0.5, 0.7, 0.7], [0.4, 0.8, 0.8]],
        "never": [[0.1, 0.1, 0.1], [0.1, 0.1, 0.7]],
    }
    out = summarise(curves, budgets)
    assert out["random_final"] == pytest.approx(0.65)
    gap = out["strategies"]["gap"]
    assert gap["per_seed"] == [20, pytest.approx(10 + 10 * 0.2 / 0.4)]
    assert gap["labels"] == pytest.approx(17.5)
    assert gap["saved"] == pytest.approx(1 - 17.5 / 30)
    assert gap["curve"][0][0] == pytest.approx(0.45)  # mean over seeds
    never = out["strategies"]["never"]
    assert never["reached"] == 1 and never["seeds"] == 2
    assert "labels" not in never and never["per_seed"][0] is None


def planted(n: int, d: int = 8, seed: int = 0):
    """Features whose first coordinate decides the human answer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    answers = [[1.0 if float(v) > 0 else 0.0] for v in x[:, 0]]
    return x, answers


def test_run_curve_learns_a_planted_signal_from_the_same_first_batch():
    pool_x, pool_answers = planted(200)
    eval_x, eval_answers = planted(100, seed=1)
    truth = [a[0] for a in eval_answers]
    heads = HeadConfig(heads=3, steps=150)
    kwargs = dict(pool_x=pool_x, pool_answers=pool_answers, eval_x=eval_x,
                  eval_truth=truth, budgets=[10, 50, 150], heads=heads)  # fmt: skip
    rnd = run_curve("random", seed=0, **kwargs)
    unc = run_curve("uncertainty", seed=0, **kwargs)
    assert rnd[0] == unc[0]  # the first batch is random and shared
    assert rnd[-1] > 0.85 and unc[-1] > 0.85  # the signal is learnt (chance: 0.5)
    assert rnd[-1] > rnd[0] - 0.05


def test_accuracy_leaves_ties_out():
    w = torch.tensor([[1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    assert accuracy(w, x, [1.0, 1.0, None]) == 0.5
