"""Rankings of K responses and the pairwise preferences they imply (no Django).

A ranking is a list of *tiers*, best first; each tier holds one or more responses
(several in one tier are a tie). Responses in no tier are *unranked*: a partial
("top-k") ranking ranks only the best few.

Implied pairs of one ranking, for every pair of responses x, y:

* x in an earlier tier than y: x is preferred (p = 1 for x);
* x and y in the same tier: a tie (p = ½);
* x ranked, y unranked: x is preferred (ranked responses beat unranked ones);
* both unranked: nothing is implied (the annotator said nothing about them).

A full ranking of K responses implies K·(K−1)/2 pairs; a top-k ranking implies
k·(k−1)/2 + k·(K−k) of them. Over several annotators the pairs are aggregated by
the mean (as Open-Assistant merges rankings into pairwise wins): the soft label of
a pair is the mean of the p's of the rankings that imply it, so a pair two
annotators order one way and a third the other way gets p = ⅔.

Pairs are returned in canonical orientation (``a < b``, as Pairloop stores a
comparison) with ``p_a``, the probability that ``a`` is preferred.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

MIN_RESPONSES = 2
MAX_RESPONSES = 9

T = TypeVar("T", bound=Hashable)


class RankingError(ValueError):
    """A ranking that cannot be read; the message names the problem and the value."""


def check_tiers(tiers: object, items: Sequence[T]) -> list[list[T]]:
    """Validate ``tiers`` against the ranked ``items`` and return it as a list of
    lists. An element may be an item (a tier of one) or a list of items (a tie).
    Refused: a non-list, no tier, an empty tier, an item that is not one of
    ``items``, an item ranked twice."""
    if not isinstance(tiers, list):
        raise RankingError(f"expected a list of tiers, got {type(tiers).__name__}")
    if not tiers:
        raise RankingError("the ranking ranks nothing (an empty list)")
    allowed = {item: item for item in items}
    seen: set[T] = set()
    out: list[list[T]] = []
    for i, tier in enumerate(tiers):
        members = tier if isinstance(tier, list) else [tier]
        if not members:
            raise RankingError(f"tier {i} is empty")
        for member in members:
            # Equal is not enough: True == 1 and 1.0 == 1 (JSON has both), but
            # neither is response 1, and a float used as an index crashes the
            # caller. An unhashable value (a dict, from JSON) is simply not one of
            # the items.
            try:
                known = member in allowed and type(allowed[member]) is type(member)
            except TypeError:
                known = False
            if not known:
                raise RankingError(
                    f"tier {i} holds {member!r}, which is not one of the responses "
                    f"({_show(items)})"
                )
            if member in seen:
                raise RankingError(f"{member!r} is ranked twice (again in tier {i})")
            seen.add(member)
        out.append(list(members))
    return out


def _show(items: Sequence[object]) -> str:
    if len(items) > 2 and all(isinstance(x, int) for x in items):
        ints = list(items)
        if ints == list(range(ints[0], ints[0] + len(ints))):
            return f"{ints[0]}..{ints[-1]}"
    return ", ".join(repr(x) for x in items)


def implied_pairs(tiers: Sequence[Sequence[T]], items: Iterable[T]) -> dict:
    """``{(a, b): p_a}`` for every pair one ranking implies (see the module
    docstring); ``a < b``. ``tiers`` must be valid (:func:`check_tiers`)."""
    rank: dict[T, int] = {}
    for level, tier in enumerate(tiers):
        for member in tier:
            rank[member] = level
    unranked = [x for x in items if x not in rank]
    pairs: dict[tuple[T, T], float] = {}

    def add(winner: T, loser: T, p: float) -> None:
        a, b = (winner, loser) if winner < loser else (loser, winner)  # type: ignore[operator]
        pairs[(a, b)] = p if a == winner else 1.0 - p

    ranked = list(rank)
    for i, x in enumerate(ranked):
        for y in ranked[i + 1 :]:
            if rank[x] == rank[y]:
                add(x, y, 0.5)
            elif rank[x] < rank[y]:
                add(x, y, 1.0)
            else:
                add(y, x, 1.0)
        for u in unranked:
            add(x, u, 1.0)
    return pairs


def aggregate_rankings(
    rankings: Iterable[tuple[Sequence[Sequence[T]], Iterable[T]]],
) -> dict:
    """``{(a, b): (p_a, n)}``: the mean p_a over the ``n`` rankings implying each
    pair. ``rankings``: (tiers, items) of each annotator's ranking."""
    values: dict[tuple[T, T], list[float]] = {}
    for tiers, items in rankings:
        for pair, p in implied_pairs(tiers, list(items)).items():
            values.setdefault(pair, []).append(p)
    return {pair: (statistics.fmean(ps), len(ps)) for pair, ps in values.items()}


def gold_pair_agreement(
    tiers: Sequence[Sequence[T]],
    gold_tiers: Sequence[Sequence[T]],
    items: Iterable[T],
) -> tuple[int, int]:
    """``(correct, n)``: how many of the ``n`` pairs a gold ranking implies one
    annotator's ranking implies the same way (the same winner, or a tie for a
    tie). A gold pair the annotator's ranking leaves unordered (both unranked in a
    top-k ranking) counts as a miss: the gold order says something about it and
    the annotator did not. This is the gold accuracy of a ranking, pair by pair,
    so it reads like pairwise gold accuracy (the share of gold pairs answered
    right); ``correct / n`` is a monotone transform of Kendall's tau-b between the
    two orders for full rankings without ties."""
    items = list(items)
    gold = implied_pairs(gold_tiers, items)
    given = implied_pairs(tiers, items)
    correct = sum(
        1
        for pair, p in gold.items()
        if pair in given and _side(given[pair]) == _side(p)
    )
    return correct, len(gold)


def _side(p: float) -> int:
    return 1 if p > 0.5 else -1 if p < 0.5 else 0
