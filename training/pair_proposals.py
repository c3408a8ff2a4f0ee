"""Which of a round's samples go to people: the pairs a best-of-N round proposes for
human comparison, by a mix of strategies, and the samples of a K-way ranking task.
Split from training.rejection, which re-exports everything here."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from training.selection import Candidate, from_head_rewards, selection_score

if TYPE_CHECKING:
    from training.rejection import PromptResult, RoundConfig, Sample

# The last two are the human queue's selection strategies (training.selection)
# applied to a prompt's samples; the queue's "uncertainty" is "closest" here (the
# same P(A > B) from the mean reward).
PAIR_STRATEGIES = (
    "best_vs_runner_up",
    "best_vs_random",
    "closest",
    "random",
    "disagreement",
    "gap",
)


@dataclass
class PairProposal:
    prompt_index: int
    strategy: str
    a_index: int
    b_index: int
    a_text: str
    b_text: str
    a_score: float | None
    b_score: float | None


def _allocate(mix: dict[str, float], total: int, rng: random.Random) -> list[str]:
    """Exactly ``total`` strategy names in the mix's proportions (largest remainder),
    shuffled so that no strategy clusters on the first prompts."""
    weights = {k: v for k, v in mix.items() if v > 0}
    norm = sum(weights.values())
    quotas = {k: total * v / norm for k, v in weights.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    leftovers = sorted(weights, key=lambda k: quotas[k] - counts[k], reverse=True)
    for k in leftovers[: total - sum(counts.values())]:
        counts[k] += 1
    names = [k for k in PAIR_STRATEGIES if k in counts for _ in range(counts[k])]
    rng.shuffle(names)
    return names


def _candidates(
    strategy: str, ranked: list[Sample], rng: random.Random
) -> list[tuple[Sample, Sample]]:
    """Pairs a strategy would propose, in its order of preference."""
    if strategy == "best_vs_runner_up":
        return [(ranked[0], ranked[1])]
    if strategy == "best_vs_random":
        others = ranked[1:]
        rng.shuffle(others)
        return [(ranked[0], o) for o in others]
    if strategy == "closest":
        pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
        return sorted(pairs, key=lambda p: (abs(p[0].score - p[1].score), p[0].index))
    pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    if strategy in ("disagreement", "gap"):
        return _selection_order(strategy, pairs)
    rng.shuffle(pairs)
    return pairs


def _selection_order(
    strategy: str, pairs: list[tuple[Sample, Sample]]
) -> list[tuple[Sample, Sample]]:
    """``pairs`` by the queue's selection score (highest first; ties keep the
    best-first order). ``disagreement`` needs every sample's head rewards from an
    ensemble of two or more heads: without them it offers nothing and the pair
    falls back to random."""

    def candidate(a: Sample, b: Sample) -> Candidate:
        if a.heads and b.heads and len(a.heads) == len(b.heads):
            return from_head_rewards("", a.heads, b.heads)
        return Candidate("", (a.score or 0.0) - (b.score or 0.0))

    if strategy == "disagreement" and not all(
        s.heads is not None and len(s.heads) >= 2 for p in pairs for s in p
    ):
        return []
    scored = [(selection_score(candidate(a, b), strategy), (a, b)) for a, b in pairs]
    return [p for _, p in sorted(scored, key=lambda x: -x[0])]


def propose_pairs(
    results: Sequence[PromptResult], config: RoundConfig, *, scored: bool
) -> list[PairProposal]:
    """Up to ``pairs_per_prompt`` distinct pairs per prompt (see ``pair_mix``)."""
    rng = random.Random(config.seed)
    mix = config.pair_mix if scored else {"random": 1.0}
    plan = _allocate(mix, len(results) * config.pairs_per_prompt, rng)
    proposals: list[PairProposal] = []
    for p, result in enumerate(results):
        unique = result.unique
        if len(unique) < 2:
            continue
        if scored:
            ranked = sorted(unique, key=lambda s: (-(s.score or 0.0), s.index))
        else:
            ranked = list(unique)
        used: set[tuple[int, int]] = set()
        per = config.pairs_per_prompt
        for strategy in plan[p * per : (p + 1) * per]:
            # A strategy with nothing new to offer (best_vs_runner_up asked twice)
            # falls back to a random unused pair, recorded as such.
            for name in (strategy, "random"):
                pick = next(
                    (
                        c
                        for c in _candidates(name, ranked, rng)
                        if tuple(sorted((c[0].index, c[1].index))) not in used
                    ),
                    None,
                )
                if pick is not None:
                    break
            if pick is None:
                break  # every pair of this prompt is taken
            a, b = pick
            used.add(tuple(sorted((a.index, b.index))))
            proposals.append(
                PairProposal(
                    prompt_index=result.index,
                    strategy=name,
                    a_index=a.index,
                    b_index=b.index,
                    a_text=a.text,
                    b_text=b.text,
                    a_score=a.score,
                    b_score=b.score,
                )
            )
    return proposals


# --------------------------------------------------------------------------------


def ranking_picks(samples: Sequence[Sample], k: int) -> list[Sample]:
    """Up to ``k`` distinct samples for one K-way ranking task: the best, the worst
    and evenly spread between them by score (several pairs per human minute, over
    the whole range the policy produced). Unscored samples (no reward model yet)
    are taken in sample order. Fewer than two distinct samples, or k < 2: none."""
    unique = [s for s in samples if s.duplicate_of is None]
    if k < 2 or len(unique) < 2:
        return []
    if len(unique) <= k:
        return unique
    if all(s.score is not None for s in unique):
        unique = sorted(unique, key=lambda s: (-s.score, s.index))
    n = len(unique)
    return [unique[round(i * (n - 1) / (k - 1))] for i in range(k)]
