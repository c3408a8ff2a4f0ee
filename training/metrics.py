"""Statistics shared by training, rounds and the labelling app's quality pages.

Plain Python on sequences of floats (no torch, no numpy), so a caller with stored
numbers needs nothing else: ranks, Pearson's r, Spearman's rho, expected
calibration error, and confidence intervals (Wilson's for a proportion, a seeded
percentile bootstrap for any statistic).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence


def sigmoid(x: float) -> float:
    # Split by sign so exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = avg
        i = j + 1
    return out


def pearson(
    xs: Sequence[float], ys: Sequence[float], *, min_points: int = 2
) -> float | None:
    """Pearson's r; ``None`` with fewer than ``min_points`` points or a constant
    variable (undefined). Two points always give ±1, so callers that show the
    number to people ask for at least 3."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < max(min_points, 2):
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(
    xs: Sequence[float], ys: Sequence[float], *, min_points: int = 2
) -> float | None:
    """Spearman's rho as Pearson's r over tie-averaged ranks."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    return pearson(ranks(xs), ranks(ys), min_points=min_points)


def expected_calibration_error(
    probs: Sequence[float], targets: Sequence[float], *, bins: int = 10
) -> float | None:
    """ECE with equal-width bins: Σ_b |B|/n · |mean(prob in B) − mean(target in B)|.

    ``targets`` may be soft (p_a ∈ [0, 1]), which is what the reward model's loss
    trains on. ``None`` for no points.
    """
    if len(probs) != len(targets):
        raise ValueError("probs and targets differ in length")
    if not probs:
        return None
    sums: dict[int, list[float]] = {}
    for p, t in zip(probs, targets, strict=True):
        s = sums.setdefault(min(int(p * bins), bins - 1), [0.0, 0.0])
        s[0] += p
        s[1] += t
    n = len(probs)
    return sum(abs(p - t) / n for p, t in sums.values())


def _normal_quantile(confidence: float) -> float:
    """z with P(|Z| <= z) = confidence for a standard normal Z."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    # Bisection on erf: exact enough (1e-12) and needs no table or scipy.
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erf(mid / math.sqrt(2)) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson_interval(
    successes: float, n: int, *, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (``successes`` may be fractional,
    e.g. ties counted as half a win); ``None`` for ``n == 0``. Unlike the normal
    approximation it stays inside [0, 1] and is sensible near 0 and 1."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return None
    z = _normal_quantile(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = lambda v: sum(v) / len(v),
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    rng: random.Random | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` (the mean by default).

    ``rng`` makes it reproducible (a fresh ``random.Random(0)`` when omitted, so
    the same numbers give the same interval). ``None`` for no values."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not values:
        return None
    rng = rng or random.Random(0)
    n = len(values)
    stats = sorted(
        statistic([values[rng.randrange(n)] for _ in range(n)])
        for _ in range(resamples)
    )
    tail = (1 - confidence) / 2
    lo = stats[min(resamples - 1, math.floor(tail * resamples))]
    hi = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return lo, hi


def winner_calibration_error(
    probs: Sequence[float], targets: Sequence[float], *, bins: int = 10
) -> float | None:
    """ECE on the confidence of the predicted winner (the standard definition).

    ``probs`` are predicted P(A ≻ B), ``targets`` the (soft) label p_a. Each pair
    enters with confidence ``max(q, 1 − q)`` and, as its outcome, the label's
    weight on the side it predicted (``p_a`` when it picked A, else ``1 − p_a``;
    1/0 for hard labels: right/wrong). Binning P(A ≻ B) itself instead, as
    :func:`expected_calibration_error` does, collapses to ``1 − mean q`` when A
    is always the chosen side (most pair files store the chosen reply first) and
    says nothing about calibration. ``None`` for no points.
    """
    if len(probs) != len(targets):
        raise ValueError("probs and targets differ in length")
    conf = [max(q, 1.0 - q) for q in probs]
    hit = [t if q >= 0.5 else 1.0 - t for q, t in zip(probs, targets, strict=True)]
    return expected_calibration_error(conf, hit, bins=bins)


# Relative length gap |len_a − len_b| / (len_a + len_b): the bucket edges eval-rm
# reports accuracy by (near-equal, moderate, large, one reply much longer).
LENGTH_GAP_EDGES = (0.0, 0.1, 0.3, 0.6)


def relative_length_gap(len_a: float, len_b: float) -> float:
    total = len_a + len_b
    return abs(len_a - len_b) / total if total else 0.0


def length_gap_bucket(len_a: float, len_b: float) -> str:
    """Name of the LENGTH_GAP_EDGES bucket of a pair, e.g. ``"0.1-0.3"``."""
    gap = relative_length_gap(len_a, len_b)
    edges = LENGTH_GAP_EDGES
    for lo, hi in zip(edges, (*edges[1:], None), strict=True):
        if hi is None or gap < hi:
            return f"{lo:g}-{hi:g}" if hi is not None else f"{lo:g}-1"
    raise AssertionError("unreachable")


def pick_longer_rate(
    len_a: Sequence[float], len_b: Sequence[float], picks_a: Sequence[bool]
) -> tuple[float | None, int]:
    """(share of pairs whose picked reply is the longer one, pairs counted).

    Pairs of equal length do not count. ``picks_a[i]`` is whether A was picked
    (by the humans' label or by the model). ``None`` when no pair counts."""
    if not len(len_a) == len(len_b) == len(picks_a):
        raise ValueError("len_a, len_b and picks_a differ in length")
    longer = n = 0
    for la, lb, pa in zip(len_a, len_b, picks_a, strict=True):
        if la == lb:
            continue
        n += 1
        longer += (la > lb) == bool(pa)
    return (longer / n if n else None), n
