"""Pair-selection strategies order a constructed pool as specified (issue 17)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from training.selection import (
    Candidate,
    from_head_rewards,
    is_random,
    order_pool,
    queue_scores,
    select,
    selection_score,
)

POOL = [
    Candidate("sure-a", diff=4.0, diff_var=0.01),  # p ≈ 0.98, heads agree
    Candidate("near-tie", diff=0.05, diff_var=0.02),  # p ≈ 0.51
    Candidate("contested", diff=1.0, diff_var=2.0),  # heads disagree a lot
    Candidate("sure-b", diff=-3.0, diff_var=0.5),  # large gap, some doubt
    Candidate("lean", diff=-0.5, diff_var=0.0),
]


def ids(order: list[int]) -> list[str]:
    return [POOL[i].id for i in order]


def test_uncertainty_puts_p_closest_to_half_first() -> None:
    assert ids(order_pool(POOL, "uncertainty")) == [
        "near-tie",
        "lean",
        "contested",
        "sure-b",
        "sure-a",
    ]


def test_disagreement_orders_by_variance_across_heads() -> None:
    assert ids(order_pool(POOL, "disagreement")) == [
        "contested",
        "sure-b",
        "near-tie",
        "sure-a",
        "lean",
    ]


def test_gap_weights_the_predicted_gap_by_uncertainty() -> None:
    # |diff|·sqrt(var): contested 1.41, sure-b 2.12, sure-a 0.4, near-tie 0.007;
    # lean (no variance) |diff|·4p(1−p) = 0.47.
    assert selection_score(POOL[3], "gap") == pytest.approx(3 * math.sqrt(0.5))
    assert ids(order_pool(POOL, "gap")) == [
        "sure-b",
        "contested",
        "lean",
        "sure-a",
        "near-tie",
    ]


def test_random_is_a_seeded_permutation() -> None:
    a = order_pool(POOL, "random", rng=random.Random(3))
    assert sorted(a) == list(range(len(POOL)))
    assert a == order_pool(POOL, "random", rng=random.Random(3))
    orders = {
        tuple(order_pool(POOL, "random", rng=random.Random(s))) for s in range(20)
    }
    assert len(orders) > 5


def test_a_mix_draws_slots_from_its_strategies() -> None:
    pool = [Candidate(str(i), diff=i / 10, diff_var=0.0) for i in range(-50, 51)]
    # All weight on one strategy: that strategy's order exactly.
    assert order_pool(pool, {"uncertainty": 1.0}) == order_pool(pool, "uncertainty")
    order = order_pool(pool, {"uncertainty": 0.5, "random": 0.5})
    assert sorted(order) == list(range(len(pool)))  # each candidate once
    # About half the first 40 slots are the 40 nearest ties taken in order.
    near = set(order_pool(pool, "uncertainty")[:40])
    share = sum(i in near for i in order[:40]) / 40
    assert 0.5 < share < 0.95, share
    first = Counter(abs(pool[i].diff) <= 0.1 for i in order[:3])
    assert first[True] >= 1
    assert [c.id for c in select(pool, "uncertainty", 3)] == ["0", "-1", "1"]


@pytest.mark.parametrize(
    "bad", ["smart", {"uncertainty": -1.0}, {"nope": 1.0}, {"random": 0.0}]
)
def test_unknown_strategies_are_refused_by_name(bad) -> None:
    with pytest.raises(ValueError, match=r"strateg|selection mix"):
        order_pool(POOL, bad)


def test_a_candidate_from_head_rewards_is_the_mean_gap_and_its_variance() -> None:
    c = from_head_rewards("x", [1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    # per-head gaps 1, 2, 2: mean 5/3, population variance 2/9
    assert c.id == "x" and abs(c.diff - 5 / 3) < 1e-12
    assert abs(c.diff_var - 2 / 9) < 1e-12
    # identical heads (or one head): no disagreement
    assert from_head_rewards("y", [0.7, 0.7], [0.2, 0.2]).diff_var == 0.0
    assert from_head_rewards("z", [0.7], [0.2]).diff_var == 0.0
    with pytest.raises(ValueError, match="same"):
        from_head_rewards("w", [1.0, 2.0], [1.0])


def test_queue_scores_descend_in_order_pool_order() -> None:
    pool = [Candidate(str(i), d) for i, d in enumerate([3.0, 0.1, -1.0, 0.0, 2.0])]
    scores = queue_scores(pool, "uncertainty")
    assert scores == [0.2, 0.8, 0.6, 1.0, 0.4]  # 3, 1, 2, 4, 0 by |p - 1/2|
    served = sorted(range(len(pool)), key=lambda i: -scores[i])
    assert served == order_pool(pool, "uncertainty")
    mix = {"uncertainty": 1.0, "random": 1.0}
    scores = queue_scores(pool, mix, rng=random.Random(3))
    served = sorted(range(len(pool)), key=lambda i: -scores[i])
    assert served == order_pool(pool, mix, rng=random.Random(3))


@pytest.mark.parametrize("strategy", ["random", {"random": 2.0, "gap": 0}])
def test_random_strategies_have_no_queue_scores(strategy) -> None:
    pool = [Candidate("a", 1.0), Candidate("b", 0.0)]
    assert is_random(strategy) and queue_scores(pool, strategy) == [None, None]
    assert not is_random({"random": 1.0, "gap": 0.5}) and not is_random("gap")
    with pytest.raises(ValueError, match="unknown selection strategy"):
        queue_scores(pool, "nope")
