"""training.metrics against textbook values (and scipy-free closed forms)."""

from __future__ import annotations

import math
import random

import pytest

from training import bon_stats
from training.metrics import (
    bootstrap_interval,
    expected_calibration_error,
    pearson,
    ranks,
    sigmoid,
    spearman,
    wilson_interval,
)


def test_ranks_average_ties() -> None:
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert ranks([]) == []


def test_pearson_and_spearman() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Undefined: a constant series, or too few points for the caller.
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1, 2], [1, 2]) == pytest.approx(1.0)
    assert pearson([1, 2], [1, 2], min_points=3) is None
    assert spearman([1, 2], [2, 1], min_points=3) is None
    with pytest.raises(ValueError, match="differ in length"):
        pearson([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2, 3], [1, 2])


def test_bon_stats_uses_the_shared_correlations() -> None:
    assert bon_stats.pearson is pearson and bon_stats.spearman is spearman


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([], []) is None
    # Perfectly calibrated within each bin.
    assert expected_calibration_error([0.25, 0.25], [0.0, 0.5]) == pytest.approx(0.0)
    # Two bins: |0.9 - 1| * 1/2 + |0.1 - 1| * 1/2.
    ece = expected_calibration_error([0.9, 0.1], [1.0, 1.0])
    assert ece == pytest.approx(0.05 + 0.45)
    # p = 1 falls into the top bin rather than an eleventh one.
    assert expected_calibration_error([1.0], [1.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [])


def test_sigmoid_does_not_overflow() -> None:
    assert sigmoid(0) == 0.5
    assert sigmoid(-1000) == 0.0 and sigmoid(1000) == 1.0
    assert sigmoid(2) == pytest.approx(1 / (1 + math.exp(-2)))


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 8 of 10 at 95 %: (0.490, 0.943) (Wilson 1927; e.g. Newcombe 1998, table I).
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and round(hi, 3) == 0.278
    assert wilson_interval(0, 0) is None
    lo90, hi90 = wilson_interval(8, 10, confidence=0.9)
    assert 0.490 < lo90 < hi90 < 0.943  # narrower at 90 %
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_bootstrap_interval_is_seeded_and_covers_the_mean() -> None:
    rng = random.Random(1)
    values = [rng.gauss(5.0, 1.0) for _ in range(400)]
    a = bootstrap_interval(values)
    assert a == bootstrap_interval(values)  # same numbers, same interval
    lo, hi = a
    mean = sum(values) / len(values)
    assert lo < mean < hi
    # Roughly mean ± 1.96 σ/√n.
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.25)
    other = bootstrap_interval(values, rng=random.Random(7))
    assert other != a
    assert bootstrap_interval([]) is None
    med = bootstrap_interval([1.0, 2.0, 3.0], lambda v: sorted(v)[len(v) // 2])
    assert 1.0 <= med[0] <= med[1] <= 3.0
