"""Train the real builtin MiniLM briefly on HH harmless pairs; it must beat chance."""

import math
from pathlib import Path

import pytest

from training.config import RewardConfig
from training.data import PairFormatError, read_pairs
from training.train_rm import train


@pytest.mark.slow
def test_minilm_beats_chance_on_hh_harmless(data_dir: Path, tmp_path: Path) -> None:
    skipped: list[PairFormatError] = []
    pairs = read_pairs(data_dir / "hh-harmless-dev.jsonl.gz", skipped=skipped)
    # The dump has a few empty final replies; they are reported, not hidden.
    assert len(skipped) < 10 and all("empty" in str(e) for e in skipped)
    train_pairs, eval_pairs = pairs[:300], pairs[-300:]  # disjoint slices
    config = RewardConfig(
        base="builtin:minilm-l6",
        learning_rate=5e-5,
        num_epochs=1,
        batch_size=8,
        max_length=128,
        eval_fraction=0.0,
        seed=0,
    )
    result = train(train_pairs, config, eval_pairs=eval_pairs, out_dir=tmp_path / "v")
    metrics = result.metrics["extra_eval"]
    n = metrics["n_decided"]
    assert n == 300
    # One-sided binomial test against 50 % at the 5 % level: SE = sqrt(.25 / n).
    threshold = 0.5 + 1.645 * math.sqrt(0.25 / n)
    assert metrics["accuracy"] > threshold, metrics
    assert (tmp_path / "v" / "pairloop.json").is_file()
