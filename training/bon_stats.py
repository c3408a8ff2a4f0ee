"""Statistics of a rejection-sampling round, and their comparison across rounds.

All functions take plain lists so that they work on stored rounds as well as on a
fresh :class:`training.rejection.RoundResult`. The signals watched across rounds are
the ones plain rejection sampling is known to go wrong on: reward climbing while
diversity collapses (distinct-n down, pairwise similarity up) and reward hacking
through length (reward–length correlation up).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations, pairwise
from typing import Any

from training.metrics import pearson, spearman

_TOKEN = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (model-independent on purpose, so
    that rounds with different policies compare)."""
    return _TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return 0.0 if values else None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def reward_stats(scores_per_prompt: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Distribution of rewards: overall mean/std/min/max, the per-prompt best, and
    the within-prompt spread (mean per-prompt std: how much choosing helps)."""
    flat = [s for scores in scores_per_prompt for s in scores]
    bests = [max(scores) for scores in scores_per_prompt if scores]
    spreads = [_std(scores) or 0.0 for scores in scores_per_prompt if len(scores) > 1]
    gains = [max(s) - sum(s) / len(s) for s in scores_per_prompt if s]
    return {
        "count": len(flat),
        "mean": _mean(flat),
        "std": _std(flat),
        "min": min(flat) if flat else None,
        "max": max(flat) if flat else None,
        "best_mean": _mean(bests),
        "per_prompt_best": bests,
        "within_prompt_std_mean": _mean(spreads),
        # Expected gain of best-of-N over a single sample, in reward units.
        "best_minus_mean": _mean(gains),
    }


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of the texts (Li et al., 2016)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def jaccard(a: set[Any], b: set[Any]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def mean_pairwise_similarity(texts: Sequence[str], n: int = 2) -> float | None:
    """Mean Jaccard similarity of the texts' n-gram sets over all pairs."""
    sets = [set(ngrams(words(t), n)) for t in texts]
    pairs = [jaccard(a, b) for a, b in combinations(sets, 2)]
    return _mean(pairs)


def diversity_stats(texts_per_prompt: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Diversity among each prompt's samples, averaged over prompts (diversity
    across prompts says nothing about collapse of the policy on one prompt)."""
    d1 = [distinct_n(t, 1) for t in texts_per_prompt]
    d2 = [distinct_n(t, 2) for t in texts_per_prompt]
    sim = [mean_pairwise_similarity(t, 2) for t in texts_per_prompt if len(t) > 1]
    return {
        "distinct_1": _mean([v for v in d1 if v is not None]),
        "distinct_2": _mean([v for v in d2 if v is not None]),
        "pairwise_jaccard_2": _mean([v for v in sim if v is not None]),
    }


def length_correlation(
    lengths: Sequence[float], scores: Sequence[float]
) -> dict[str, float | None]:
    """How much the reward follows response length (a reward-hacking signal)."""
    return {"pearson": pearson(lengths, scores), "spearman": spearman(lengths, scores)}


# Metrics compared across rounds, and the direction that is a warning sign.
TRACKED = {
    "reward_mean": "info",
    "reward_best_mean": "info",
    "distinct_2": "down",
    "pairwise_jaccard_2": "up",
    "length_spearman": "up",
    "duplicate_rate": "up",
    "mean_tokens": "up",
}


def heads_disagreement(
    per_prompt: Sequence[Sequence[Sequence[float]]],
) -> dict[str, Any] | None:
    """How often an ensemble reward model's heads disagree on a prompt's best
    sample: ``per_prompt[i][j]`` holds sample j's rewards by head. A prompt counts
    when it has at least two samples; it disagrees when the heads' argmaxes are
    not all the same sample. Best-of-N picks what the mean head likes best, so a
    rising share says the selection leans on what the heads do not agree on — an
    early sign of reward hacking (the ensemble as a monitor, Coste et al. 2024).
    None with one head (nothing to disagree)."""
    rows = [p for p in per_prompt if len(p) >= 2]
    heads = max((len(s) for p in rows for s in p), default=0)
    if heads < 2:
        return None
    disagree = 0
    for samples in rows:
        winners = {
            max(range(len(samples)), key=lambda j, h=h: (samples[j][h], -j))
            for h in range(heads)
        }
        disagree += len(winners) > 1
    return {
        "heads": heads,
        "prompts": len(rows),
        "disagree": disagree,
        "share": disagree / len(rows) if rows else None,
    }


def flatten_round_stats(stats: dict[str, Any]) -> dict[str, float | None]:
    """The tracked numbers of one round's ``stats`` (as made by ``run_round``)."""
    reward = stats.get("reward") or {}
    diversity = stats.get("diversity") or {}
    length = stats.get("length_correlation") or {}
    return {
        "reward_mean": reward.get("mean"),
        "reward_best_mean": reward.get("best_mean"),
        "distinct_2": diversity.get("distinct_2"),
        "pairwise_jaccard_2": diversity.get("pairwise_jaccard_2"),
        "length_spearman": length.get("spearman"),
        "duplicate_rate": stats.get("duplicate_rate"),
        "mean_tokens": stats.get("mean_tokens"),
        "heads_disagree_share": (stats.get("heads_disagreement") or {}).get("share"),
    }


def compare_rounds(
    rounds: Sequence[dict[str, Any]], *, warn_relative_change: float = 0.2
) -> dict[str, Any]:
    """Series and round-over-round deltas of the tracked metrics, oldest first.

    A warning is raised for a metric that moved in its bad direction by more than
    ``warn_relative_change`` (relative to its previous value) in the latest round.
    Rewards from different reward-model versions are on different scales, so
    their series are reported but never warned on.
    """
    flat = [flatten_round_stats(r) for r in rounds]
    series = {key: [f[key] for f in flat] for key in TRACKED}
    deltas: dict[str, list[float | None]] = {}
    warnings: list[str] = []
    for key, values in series.items():
        deltas[key] = [
            None if a is None or b is None else b - a for a, b in pairwise(values)
        ]
        direction = TRACKED[key]
        if direction == "info" or len(values) < 2:
            continue
        before, after = values[-2], values[-1]
        if before is None or after is None:
            continue
        change = after - before
        scale = max(abs(before), 1e-9)
        bad = change < 0 if direction == "down" else change > 0
        if bad and abs(change) / scale > warn_relative_change:
            warnings.append(
                f"{key} went {'down' if change < 0 else 'up'} from {before:.3g} "
                f"to {after:.3g} in the latest round"
            )
    return {
        "rounds": len(rounds),
        "series": series,
        "deltas": deltas,
        "warnings": warnings,
    }
