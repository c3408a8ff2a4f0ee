"""Which pairs to label next: pure functions that order a pool by strategy.

Each candidate carries the reward model's view of it: ``diff``, the predicted
reward difference r_a − r_b (the mean over ensemble heads), so P(A ≻ B) =
σ(diff); and ``diff_var``, the variance of that difference across the heads (0
for a single head). The strategies (issue 17):

- ``random`` — today's queue: a seeded shuffle.
- ``uncertainty`` — P(A ≻ B) closest to ½ first (near-ties; "Nearly Optimal
  Active Preference Learning" argues they are the most informative).
- ``disagreement`` — largest variance across heads first (an epistemic ensemble,
  as in Dwaracherla et al. 2024).
- ``gap`` — large predicted gap weighted by uncertainty, DRTS-style
  (ActiveUltraFeedback): ``|diff| · sqrt(diff_var)`` — pairs the model thinks are
  far apart but is unsure about. With one head (no variance) it falls back to
  ``|diff| · 4·p·(1 − p)``, the gap weighted by the Bernoulli uncertainty.
- a mix — ``{"uncertainty": 0.5, "random": 0.5}``: every slot of the order is
  drawn from one strategy with those weights, taking that strategy's best
  candidate not yet placed (so some random exploration stays in the order).

Ties keep the pool's order (sorts are stable), and nothing here touches a model:
callers score, these functions order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from training.metrics import sigmoid

STRATEGIES = ("random", "uncertainty", "disagreement", "gap")


@dataclass(frozen=True)
class Candidate:
    """One unlabelled pair as the reward model sees it."""

    id: str
    diff: float  # predicted r_a − r_b (mean over heads)
    diff_var: float = 0.0  # variance of r_a − r_b across heads

    @property
    def p_a(self) -> float:
        return sigmoid(self.diff)


def selection_score(candidate: Candidate, strategy: str) -> float:
    """Higher = label sooner (``random`` has no score; see :func:`order_pool`)."""
    c = candidate
    if strategy == "uncertainty":
        return -abs(c.p_a - 0.5)
    if strategy == "disagreement":
        return c.diff_var
    if strategy == "gap":
        if c.diff_var > 0:
            return abs(c.diff) * math.sqrt(c.diff_var)
        return abs(c.diff) * 4.0 * c.p_a * (1.0 - c.p_a)
    raise ValueError(
        f"unknown selection strategy {strategy!r}; use one of {STRATEGIES}"
    )


def _ranked(pool: Sequence[Candidate], strategy: str, rng: random.Random) -> list[int]:
    if strategy == "random":
        order = list(range(len(pool)))
        rng.shuffle(order)
        return order
    scores = [selection_score(c, strategy) for c in pool]
    return sorted(range(len(pool)), key=lambda i: -scores[i])


def order_pool(
    pool: Sequence[Candidate],
    strategy: str | Mapping[str, float],
    *,
    rng: random.Random | None = None,
) -> list[int]:
    """Indices of ``pool``, the pair to label first first.

    ``strategy`` is a name of :data:`STRATEGIES` or a mix ``{name: weight}``.
    ``rng`` drives ``random`` and the mix's draws (``random.Random(0)`` when
    omitted, so the same pool gives the same order)."""
    rng = rng or random.Random(0)
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown selection strategy {strategy!r}; use one of {STRATEGIES}"
            )
        return _ranked(pool, strategy, rng)
    weights = {k: float(v) for k, v in strategy.items() if float(v) > 0}
    unknown = sorted(set(strategy) - set(STRATEGIES))
    if unknown or not weights or any(float(v) < 0 for v in strategy.values()):
        raise ValueError(
            f"a selection mix needs non-negative weights over {STRATEGIES} with a "
            f"positive sum (got {dict(strategy)})"
        )
    names = sorted(weights)
    rankings = {name: _ranked(pool, name, rng) for name in names}
    cursor = dict.fromkeys(names, 0)
    placed: set[int] = set()
    out: list[int] = []
    while len(out) < len(pool):
        name = rng.choices(names, weights=[weights[n] for n in names])[0]
        ranking = rankings[name]
        while ranking[cursor[name]] in placed:
            cursor[name] += 1
        i = ranking[cursor[name]]
        placed.add(i)
        out.append(i)
    return out


def select(
    pool: Sequence[Candidate],
    strategy: str | Mapping[str, float],
    k: int,
    *,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """The first ``k`` candidates of :func:`order_pool`."""
    return [pool[i] for i in order_pool(pool, strategy, rng=rng)[:k]]


def from_head_rewards(
    id: str, heads_a: Sequence[float], heads_b: Sequence[float]
) -> Candidate:
    """A candidate from each ensemble head's rewards of its two responses: ``diff``
    the mean over heads of r_a − r_b, ``diff_var`` their population variance (0 for
    one head, and for identical heads)."""
    if len(heads_a) != len(heads_b) or not heads_a:
        raise ValueError(
            f"{len(heads_a)} and {len(heads_b)} head rewards: need the same, >= 1"
        )
    diffs = [a - b for a, b in zip(heads_a, heads_b, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / len(diffs)
    return Candidate(id, mean, var)


def is_random(strategy: str | Mapping[str, float]) -> bool:
    """True when ``strategy`` orders at random only (``random``, or a mix whose
    only positive weight is random's): nothing to score."""
    if isinstance(strategy, str):
        return strategy == "random"
    return {k for k, v in strategy.items() if float(v) > 0} == {"random"}


def queue_scores(
    pool: Sequence[Candidate],
    strategy: str | Mapping[str, float],
    *,
    rng: random.Random | None = None,
) -> list[float | None]:
    """Per candidate, in pool order, a score whose descending order is
    :func:`order_pool`'s: 1.0 for the first, falling by 1/len(pool) a place (a rank,
    so a mix, whose order no single score gives, is served as drawn). ``None`` for
    every candidate when the strategy is random: the queue's own random order is
    the one to keep."""
    if is_random(strategy):
        order_pool(pool, strategy, rng=rng)  # validates the strategy
        return [None] * len(pool)
    n = len(pool)
    scores: list[float | None] = [None] * n
    for place, i in enumerate(order_pool(pool, strategy, rng=rng)):
        scores[i] = (n - place) / n
    return scores
