"""Training on every pair given a separate validation set, periodic validation
and best-checkpoint selection (issue 17)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.rm_eval import evaluate_pairs
from training.train_rm import train

from .conftest import save_tiny_base, synthetic_pairs
from .test_train_rm import tiny_config


def flipped(pairs):
    return [dataclasses.replace(p, p_a=1.0 - p.p_a, id=p.id + "-flip") for p in pairs]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return save_tiny_base(tmp_path / "base", "encoder")


def test_a_validation_set_lets_every_pair_train(base: Path) -> None:
    pairs = synthetic_pairs(64, seed=1)
    val = synthetic_pairs(24, seed=2)
    result = train(pairs, tiny_config(base, num_epochs=1), validation_pairs=val)
    assert result.metrics["train"]["pairs"] == 64
    assert result.metrics["eval"]["n"] == 24
    # Four evenly spaced passes (the config's default), the last at the end.
    steps = [v["step"] for v in result.metrics["validation"]]
    assert len(steps) == 4 and steps == sorted(steps)
    assert steps[-1] == result.metrics["train"]["steps"]


def test_best_checkpoint_is_kept(base: Path, tmp_path: Path) -> None:
    """Validation labels are the training labels flipped: the more the model
    learns, the worse it validates, so the best pass is the first, and the
    weights returned (and saved) are that pass's, not the last ones."""
    pairs = synthetic_pairs(160, seed=1)
    val = flipped(synthetic_pairs(40, seed=2))
    config = tiny_config(base, num_epochs=3, validations=3)
    result = train(pairs, config, validation_pairs=val, out_dir=tmp_path / "v")
    passes = result.metrics["validation"]
    losses = [v["log_loss"] for v in passes]
    assert losses[0] < losses[-1]
    assert result.metrics["best_step"] == passes[0]["step"] < passes[-1]["step"]
    m = evaluate_pairs(result.model, result.tokenizer, val, max_length=64)
    assert m["log_loss"] == pytest.approx(min(losses), rel=1e-4)
    assert result.metrics["eval"]["log_loss"] == pytest.approx(min(losses))
    # Without selection the last weights stay.
    config = dataclasses.replace(config, select_best=False)
    last = train(pairs, config, validation_pairs=val)
    m = evaluate_pairs(last.model, last.tokenizer, val, max_length=64)
    assert m["log_loss"] == pytest.approx(losses[-1], rel=1e-4)
