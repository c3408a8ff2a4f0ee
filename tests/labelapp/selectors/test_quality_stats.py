"""Agreement, annotator checks and the reward-model monitor's numbers, pure
(labelapp.selectors.quality_stats), against hand-worked and textbook examples."""

from __future__ import annotations

import numpy as np
import pytest

from labelapp.selectors import quality_stats
from labelapp.selectors.quality_stats import LabelObs
from training import metrics

N = None

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section A:
# 4 observers x 12 units, nominal values 1..5, "." = missing. Nominal alpha = 0.743.
KRIPP_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    "C": [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
}


# --- alpha and agreement, pure ----------------------------------------------------


def test_alpha_krippendorff_2011_textbook_example() -> None:
    units = list(zip(*KRIPP_2011.values(), strict=True))
    alpha = quality_stats.krippendorff_alpha_nominal(units)
    assert alpha == pytest.approx(0.743, abs=5e-4)
    # Worked by hand from the paper's coincidence matrix: n = 40 pairable values,
    # Σ_c o_cc = 7 + 10 + 8 + 4 + 3 = 32, marginals n_c = 9, 13, 10, 5, 3, so
    # α = 1 − (n−1)·(n − Σ o_cc) / (n² − Σ n_c²) = 1 − 39·8 / (1600 − 384).
    assert alpha == pytest.approx(1 - 39 * 8 / (1600 - 384), abs=1e-12)


def test_alpha_ignores_unpairable_units_and_missing_values() -> None:
    units = list(zip(*KRIPP_2011.values(), strict=True))
    # Unit 12 has one value: dropping it, or adding value-less units, changes nothing.
    assert quality_stats.krippendorff_alpha_nominal(units[:11]) == pytest.approx(
        quality_stats.krippendorff_alpha_nominal(units)
    )
    assert quality_stats.krippendorff_alpha_nominal([*units, (N, N, N, N), (7,)]) == (
        pytest.approx(quality_stats.krippendorff_alpha_nominal(units))
    )


def test_alpha_and_pairwise_agreement_hand_worked() -> None:
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["tie", "tie"]]
    # n = 8, n_a = n_b = 3, n_tie = 2; one disagreeing unit of 2 values contributes
    # 2 ordered unequal pairs / (2 − 1): α = 1 − 7·2 / (64 − 9 − 9 − 4) = 2/3.
    assert quality_stats.krippendorff_alpha_nominal(units) == pytest.approx(2 / 3)
    assert quality_stats.pairwise_agreement(units) == pytest.approx(3 / 4)
    # Three coders on one unit: pairs (a,a) agree, (a,b) x2 disagree.
    assert quality_stats.pairwise_agreement([["a", "a", "b"]]) == pytest.approx(1 / 3)


def test_alpha_edge_cases() -> None:
    assert quality_stats.krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == 1.0
    # One category only: expected disagreement 0, alpha undefined.
    assert quality_stats.krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None
    assert quality_stats.krippendorff_alpha_nominal([["a"], ["b"]]) is None
    assert quality_stats.krippendorff_alpha_nominal([]) is None
    assert quality_stats.pairwise_agreement([["a"]]) is None
    # Systematic disagreement is worse than chance.
    assert quality_stats.krippendorff_alpha_nominal([["a", "b"], ["b", "a"]]) < 0


def test_both_bad_category_or_excluded() -> None:
    obs = [
        LabelObs(1, "x", "a"),
        LabelObs(1, "y", "a"),
        LabelObs(2, "x", "b"),
        LabelObs(2, "y", "both_bad"),
        LabelObs(3, "x", "b"),
        LabelObs(3, "y", "b"),
    ]
    as_category = quality_stats.units_from_observations(obs)
    excluded = quality_stats.units_from_observations(obs, both_bad="exclude")
    assert quality_stats.pairwise_agreement(as_category) == pytest.approx(2 / 3)
    assert quality_stats.pairwise_agreement(excluded) == 1.0
    assert quality_stats.krippendorff_alpha_nominal(excluded) == 1.0


def test_annotator_pair_and_leave_one_out_agreement() -> None:
    obs = [
        LabelObs(1, "x", "a"),
        LabelObs(1, "y", "a"),
        LabelObs(1, "z", "b"),
        LabelObs(2, "x", "b"),
        LabelObs(2, "y", "b"),
        LabelObs(2, "z", "b"),
        LabelObs(3, "x", "a"),
        LabelObs(3, "y", "b"),
    ]
    pairs = quality_stats.annotator_pair_agreement(obs)
    assert pairs[("x", "y")] == {"n": 3, "agree": 2, "rate": pytest.approx(2 / 3)}
    assert pairs[("x", "z")] == {"n": 2, "agree": 1, "rate": 0.5}
    loo = quality_stats.leave_one_out_agreement(obs)
    # Unit 1: others of x are (a, b): split, skipped; others of z are (a, a): z
    # disagrees. Unit 2: all agree. Unit 3: the single other label is the majority.
    assert loo["x"] == {"n": 2, "agree": 1, "rate": 0.5}
    assert loo["z"] == {"n": 2, "agree": 1, "rate": 0.5}
    assert loo["y"] == {"n": 2, "agree": 1, "rate": 0.5}


# --- annotator checks, pure -------------------------------------------------------


def test_position_bias_uses_display_side() -> None:
    assert quality_stats.displayed_side("a", False) == "left"
    assert quality_stats.displayed_side("a", True) == "right"
    assert quality_stats.displayed_side("b", True) == "left"
    assert quality_stats.displayed_side("tie", True) is None
    obs = [
        LabelObs(1, "x", "a", shown_swapped=False),  # left
        LabelObs(2, "x", "b", shown_swapped=True),  # left
        LabelObs(3, "x", "b", shown_swapped=False),  # right
        LabelObs(4, "x", "a", shown_swapped=False),  # left
        LabelObs(5, "x", "tie", shown_swapped=False),  # not counted
    ]
    bias = quality_stats.position_bias(obs)["x"]
    assert (bias["n"], bias["left"], bias["left_rate"]) == (4, 3, 0.75)
    assert bias["z"] == pytest.approx((3 - 2) / 1.0)


def test_speed_median_and_fast_labels() -> None:
    obs = [
        LabelObs(i, "x", "a", duration_ms=ms)
        for i, ms in enumerate([1000, 2500, 4000, 9000, None])
    ]
    s = quality_stats.speed(obs)["x"]
    assert s["n"] == 4 and s["median_s"] == pytest.approx(3.25)
    assert s["fast"] == 2 and s["fast_rate"] == 0.5
    assert quality_stats.speed(obs, fast_threshold_s=1.5)["x"]["fast"] == 1


def test_gold_accuracy_and_flagging() -> None:
    obs = [LabelObs(i, "good", "a", gold_choice="a") for i in range(10)]
    obs += [
        LabelObs(i, "bad", "a" if i < 5 else "b", gold_choice="a") for i in range(10)
    ]
    obs += [LabelObs(i, "new", "b", gold_choice="a") for i in range(3)]
    obs += [LabelObs(99, "bad", "b")]  # not gold: ignored
    gold = quality_stats.gold_accuracy(obs)
    assert gold["good"]["accuracy"] == 1.0
    assert gold["bad"] == {"n": 10, "correct": 5, "accuracy": 0.5}
    # "new" is at 0% but with 3 gold labels that is not enough evidence yet.
    assert quality_stats.gold_flagged(gold, min_count=10, min_accuracy=0.7) == ["bad"]
    assert quality_stats.gold_flagged(gold, min_count=3, min_accuracy=0.7) == [
        "bad",
        "new",
    ]


# --- reward-model monitor, pure ---------------------------------------------------


def test_rm_human_agreement() -> None:
    pairs = [
        (2.0, 1.0, 1.0),  # agree
        (0.0, 1.0, 0.2),  # agree
        (0.0, 1.0, 0.9),  # disagree
        (1.0, 1.0, 1.0),  # RM has no pick: skipped
        (1.0, 0.0, 0.5),  # humans tied: skipped
        (None, 0.0, 1.0),  # unscored: skipped
    ]
    assert quality_stats.rm_human_agreement(pairs) == {
        "n": 3,
        "agree": 2,
        "rate": pytest.approx(2 / 3),
    }


def test_expected_calibration_error_hand_worked() -> None:
    # Bin [0.9, 1.0): probs 0.9, 0.95, targets 1, 0 -> |0.925 − 0.5| x 2/4.
    # Bin [0.1, 0.2): prob 0.1, target 0 -> 0.1 x 1/4; bin [0.5, 0.6): exact.
    ece = metrics.expected_calibration_error([0.9, 0.95, 0.1, 0.5], [1, 0, 0, 0.5])
    assert ece == pytest.approx(0.425 * 0.5 + 0.1 * 0.25)
    assert metrics.expected_calibration_error([], []) is None
    assert metrics.expected_calibration_error([1.0], [1.0]) == 0.0
    assert metrics.sigmoid(-1000.0) == 0.0 and metrics.sigmoid(0.0) == 0.5


def test_correlations_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    assert quality_stats.pearson(list(x), list(y)) == pytest.approx(
        np.corrcoef(x, y)[0, 1]
    )
    # Spearman with ties: average ranks, then Pearson.
    xs = [1.0, 2.0, 2.0, 3.0, 10.0]
    ys = [5.0, 6.0, 7.0, 8.0, 7.0]
    assert metrics.ranks(xs) == [1.0, 2.5, 2.5, 4.0, 5.0]
    assert quality_stats.spearman(xs, ys) == pytest.approx(
        np.corrcoef(metrics.ranks(xs), metrics.ranks(ys))[0, 1]
    )
    assert quality_stats.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert quality_stats.pearson([1, 1, 1], [1, 2, 3]) is None
    assert quality_stats.pearson([1, 2], [1, 2]) is None


def test_diversity_trend_tolerates_missing_keys() -> None:
    trend = quality_stats.diversity_trend(
        [
            (1, {"diversity": {"distinct_1": 0.5, "distinct_2": 0.8, "note": "x"}}),
            (2, {}),
            (3, None),
            (4, {"distinct_2": 0.6, "diversity": "broken"}),
        ]
    )
    assert trend == [
        {"round": 1, "distinct_1": 0.5, "distinct_2": 0.8},
        {"round": 2},
        {"round": 3},
        {"round": 4, "distinct_2": 0.6},
    ]


# --- selectors and the pause service (database) -----------------------------------
