"""Rankings → implied pairwise preferences, against hand-computed cases."""

from __future__ import annotations

import pytest

from training.rankings import (
    RankingError,
    aggregate_rankings,
    check_tiers,
    implied_pairs,
)


def test_full_ranking_implies_every_pair():
    # 3 > 1 > 2 > 4
    assert implied_pairs([[3], [1], [2], [4]], [1, 2, 3, 4]) == {
        (1, 2): 1.0,
        (1, 3): 0.0,
        (1, 4): 1.0,
        (2, 3): 0.0,
        (2, 4): 1.0,
        (3, 4): 1.0,
    }


def test_ties_give_one_half():
    # 2 = 3 > 1
    assert implied_pairs([[2, 3], [1]], [1, 2, 3]) == {
        (2, 3): 0.5,
        (1, 2): 0.0,
        (1, 3): 0.0,
    }


def test_top_k_ranked_beat_unranked_and_unranked_pairs_imply_nothing():
    # Top-2 of five: 5 > 2; 1, 3, 4 unranked.
    pairs = implied_pairs([[5], [2]], [1, 2, 3, 4, 5])
    assert pairs == {
        (2, 5): 0.0,
        (1, 5): 0.0,
        (3, 5): 0.0,
        (4, 5): 0.0,
        (1, 2): 0.0,
        (2, 3): 1.0,
        (2, 4): 1.0,
    }
    # k(k-1)/2 + k(K-k) = 1 + 6; the three unranked pairs are absent.
    assert len(pairs) == 7
    assert not {(1, 3), (1, 4), (3, 4)} & set(pairs)


def test_top_1_with_a_tie_and_the_rest_unranked():
    # 1 = 3 best, 2 and 4 unranked.
    assert implied_pairs([[1, 3]], [1, 2, 3, 4]) == {
        (1, 3): 0.5,
        (1, 2): 1.0,
        (1, 4): 1.0,
        (2, 3): 0.0,
        (3, 4): 1.0,
    }


def test_aggregation_is_the_mean_over_the_rankings_that_imply_a_pair():
    items = [10, 20, 30]
    agg = aggregate_rankings(
        [
            ([[10], [20], [30]], items),  # 10 > 20 > 30
            ([[20], [10], [30]], items),  # 20 > 10 > 30
            ([[10, 20]], items),  # 10 = 20 > 30 (30 unranked)
            ([[30]], items),  # 30 best, 10 and 20 unranked: nothing on (10, 20)
        ]
    )
    # (10, 30): 1, 1, 1 (ranked beats unranked), 0 -> 3/4; (20, 30) likewise.
    assert agg == {
        (10, 20): (0.5, 3),  # (1 + 0 + ½) / 3
        (10, 30): (3 / 4, 4),
        (20, 30): (3 / 4, 4),
    }


@pytest.mark.parametrize(
    ("tiers", "why"),
    [
        ("0 > 1", "expected a list of tiers, got str"),
        ([], "ranks nothing"),
        ([[0], []], "tier 1 is empty"),
        ([[0], [7]], "tier 1 holds 7, which is not one of the responses (0..2)"),
        ([0, [1, 0]], "0 is ranked twice (again in tier 1)"),
        ([True], "tier 0 holds True"),
        # 1.0 == 1, but an index is an integer (a float crashed the importer).
        ([[0], [1.0]], "tier 1 holds 1.0"),
        ([[0, "1"]], "tier 0 holds '1'"),
    ],
)
def test_bad_rankings_are_refused_naming_the_problem(tiers, why):
    with pytest.raises(RankingError, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_tiers(tiers, [0, 1, 2])


def test_single_ids_and_lists_mix():
    assert check_tiers([2, [0, 1]], [0, 1, 2]) == [[2], [0, 1]]


def test_gold_pair_agreement_by_hand():
    from training.rankings import gold_pair_agreement

    items = [1, 2, 3, 4]
    gold = [[1], [2], [3], [4]]  # 6 pairs
    assert gold_pair_agreement(gold, gold, items) == (6, 6)
    assert gold_pair_agreement([[4], [3], [2], [1]], gold, items) == (0, 6)
    # One swap (2 and 3): 5 of 6; Kendall tau = 2 * 5/6 - 1 = 2/3.
    assert gold_pair_agreement([[1], [3], [2], [4]], gold, items) == (5, 6)
    # Top-1 [1]: 1 over each other right (3); 2-3, 2-4, 3-4 unordered: misses.
    assert gold_pair_agreement([[1]], gold, items) == (3, 6)
    # A tie where gold orders is a miss; a tie where gold ties is right.
    assert gold_pair_agreement([[1, 2], [3], [4]], gold, items) == (5, 6)
    assert gold_pair_agreement([[1, 2]], [[1, 2]], [1, 2]) == (1, 1)
    # A top-k gold order implies fewer pairs: [1] over the rest is 3 pairs.
    assert gold_pair_agreement([[2], [1]], [[1]], items) == (2, 3)


def test_an_unhashable_member_is_a_ranking_error_not_a_crash():
    from training.rankings import RankingError, check_tiers

    with pytest.raises(RankingError, match="not one of the responses"):
        check_tiers([[{"id": 1}]], [1, 2])
