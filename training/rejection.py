"""One rejection-sampling (best-of-N) round: sample, dedupe, score, select, propose.

``run_round(prompts, sampler, scorer, config)`` draws ``config.n`` samples per
prompt, removes exact duplicates per prompt (they are kept in the result, marked,
and counted), scores the unique ones, keeps the best per prompt as an SFT example
and proposes pairs for human comparison by a configurable mix of strategies.
Without a scorer (round 0, before any reward model exists) only random pairs are
proposed and no best is chosen.

Adaptive N (``config.adaptive``): prompts are sampled in chunks and a prompt stops
early once more samples are unlikely to beat its best by a meaningful margin.
The rule, after at least ``adaptive_min_samples`` samples: fit a normal
distribution to the prompt's rewards so far (mean m, sample std s); a further
sample beats the best b by the margin d with probability
``p = 1 - Phi((b + d - m) / s)``; with ``r`` samples left until ``n`` the chance
that any of them does is ``1 - (1 - p) ** r``; stop when that is below
``adaptive_threshold``. The margin matters: for an exchangeable sequence the
chance that one of r more samples beats the best of k is r / (k + r) whatever the
distribution, so a rule without a margin would almost never stop. With it, prompts
on which the policy is nearly deterministic (the rewards barely vary) stop after
``adaptive_min_samples`` while prompts with a wide reward spread get all ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from training import bon_stats
from training.pair_proposals import (
    PAIR_STRATEGIES,
    PairProposal,
    propose_pairs,
)
from training.sampling import (
    BadSamplingInput,
    Completion,
    Conversation,
    Sampler,
    validate_request,
)

DEFAULT_PAIR_MIX = {
    "best_vs_runner_up": 0.25,
    "best_vs_random": 0.25,
    "closest": 0.25,
    "random": 0.25,
}

# progress(fraction in [0, 1], message)
RoundProgress = Callable[[float, str], None]


class Scorer(Protocol):
    """Anything that scores responses to conversations, higher is better.

    ``training.scoring.RewardScorer`` is the real one; tests use small stand-ins.
    """

    def __call__(
        self, conversations: list[list[dict[str, str]]], responses: list[str]
    ) -> list[float]: ...


@dataclass
class RoundConfig:
    """Settings of one round. Saved with the round's results."""

    n: int = 8
    """Samples per prompt (the N of best-of-N); with ``adaptive`` the maximum."""
    max_new_tokens: int = 256
    """Generation stops at this many tokens (finish reason "length")."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy (then all n samples are the same)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 samples from the full distribution."""
    seed: int = 0
    """Seeds sampling (per prompt and sample index) and the pair choice."""
    pair_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PAIR_MIX))
    """Share of proposed pairs per strategy: ``best_vs_runner_up`` (the reward
    model's closest call at the top), ``best_vs_random`` (audits the pick),
    ``closest`` (the closest-scored pair: most informative for the reward model),
    ``random``, and the queue's ``disagreement`` (the pair whose reward difference
    the ensemble heads disagree on most; needs an ensemble RM, else it falls back
    to random, recorded as such) and ``gap`` (large predicted gap weighted by
    uncertainty), both as ``training.selection`` scores them. Weights are
    normalised; ignored without a scorer (random only)."""
    pairs_per_prompt: int = 1
    """Pairs proposed per prompt (fewer where a prompt has too few unique samples)."""
    adaptive: bool = False
    """Sample in chunks and stop early per prompt (module docstring); needs a
    scorer."""
    adaptive_chunk: int = 2
    """Samples added per prompt per step after the first ``adaptive_min_samples``."""
    adaptive_min_samples: int = 4
    """Samples drawn before the stopping rule may stop a prompt (at least 2)."""
    adaptive_threshold: float = 0.1
    """Stop once P(some remaining sample beats the best by the margin) is below."""
    adaptive_margin: float = 0.25
    """Reward improvement worth sampling for (0.25 ≈ a 56 % Bradley–Terry
    preference, about what one human label can resolve)."""
    adaptive_compare: bool = False
    """Draw all n samples and replay the adaptive rule on each prompt's first
    samples to report what it would have saved and how often its pick differs.
    Exact for the transformers and vLLM backends, whose sample i is the same
    whether drawn alone or in a batch."""

    def validate(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise BadSamplingInput(f"n must be an integer >= 1, got {self.n!r}")
        if self.pairs_per_prompt < 0:
            raise BadSamplingInput("pairs_per_prompt must be >= 0")
        unknown = set(self.pair_mix) - set(PAIR_STRATEGIES)
        if unknown:
            raise BadSamplingInput(
                f"unknown pair strategies {sorted(unknown)}; "
                f"known: {', '.join(PAIR_STRATEGIES)}"
            )
        if any(w < 0 for w in self.pair_mix.values()) or (
            self.pairs_per_prompt and not sum(self.pair_mix.values()) > 0
        ):
            raise BadSamplingInput("pair_mix weights must be >= 0 and not all 0")
        if self.adaptive_chunk < 1 or self.adaptive_min_samples < 2:
            raise BadSamplingInput("adaptive_chunk >= 1 and adaptive_min_samples >= 2")
        if not 0 < self.adaptive_threshold < 1:
            raise BadSamplingInput("adaptive_threshold must be in (0, 1)")


@dataclass
class Sample:
    index: int
    """Position among the prompt's samples (the sample seed index)."""
    text: str
    token_count: int
    finish_reason: str
    score: float | None = None
    duplicate_of: int | None = None
    """Index of the earlier identical sample, for exact duplicates."""
    heads: list[float] | None = None
    """The rewards by ensemble head, when the scorer reports them (``score`` is
    their mean)."""


@dataclass
class PromptResult:
    index: int
    conversation: Conversation
    samples: list[Sample]
    best_index: int | None = None
    """Index of the highest-scored sample (None without a scorer)."""
    stopped_early: bool = False

    @property
    def unique(self) -> list[Sample]:
        return [s for s in self.samples if s.duplicate_of is None]

    @property
    def best(self) -> Sample | None:
        return None if self.best_index is None else self.samples[self.best_index]


@dataclass
class RoundResult:
    config: RoundConfig
    prompts: list[PromptResult]
    pairs: list[PairProposal]
    stats: dict[str, Any]

    def sft_examples(self) -> list[dict[str, Any]]:
        """The best sample per prompt as ``{"messages": [...]}`` (TRL's SFT format)."""
        return [
            {
                "messages": [
                    *p.conversation,
                    {"role": "assistant", "content": p.best.text},
                ]
            }
            for p in self.prompts
            if p.best is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------


def _add_samples(result: PromptResult, completions: Sequence[Completion]) -> None:
    seen = {s.text: s.index for s in result.samples if s.duplicate_of is None}
    for completion in completions:
        index = len(result.samples)
        first = seen.setdefault(completion.text, index)
        result.samples.append(
            Sample(
                index=index,
                text=completion.text,
                token_count=completion.token_count,
                finish_reason=completion.finish_reason,
                duplicate_of=None if first == index else first,
            )
        )


def _score(
    results: Sequence[PromptResult], scorer: Scorer, only_unscored: bool = True
) -> None:
    todo = [
        (r, s)
        for r in results
        for s in r.unique
        if not (only_unscored and s.score is not None)
    ]
    if todo:
        scores = scorer([r.conversation for r, _ in todo], [s.text for _, s in todo])
        if len(scores) != len(todo):
            raise RuntimeError(f"scorer returned {len(scores)} scores for {len(todo)}")
        # training.scoring.RewardScorer keeps each item's rewards by head.
        by_head = getattr(scorer, "head_rewards", None)
        for (r, sample), score in zip(todo, scores, strict=True):
            sample.score = float(score)
            if by_head is not None:
                row = by_head.get(scorer.key(r.conversation, sample.text))  # type: ignore[attr-defined]
                sample.heads = None if row is None else [float(x) for x in row]
    for r in results:
        for s in r.samples:
            if s.duplicate_of is not None:
                s.score = r.samples[s.duplicate_of].score
                s.heads = r.samples[s.duplicate_of].heads


def _best_index(samples: Sequence[Sample]) -> int | None:
    scored = [s for s in samples if s.duplicate_of is None and s.score is not None]
    if not scored:
        return None
    # Ties go to the earlier sample, so the pick does not depend on dict order.
    return max(scored, key=lambda s: (s.score, -s.index)).index


def should_stop(scores: Sequence[float], remaining: int, config: RoundConfig) -> bool:
    """The adaptive-N stopping rule (module docstring)."""
    if remaining <= 0:
        return True
    k = len(scores)
    if k < config.adaptive_min_samples:
        return False
    mean = sum(scores) / k
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (k - 1))
    target = max(scores) + config.adaptive_margin
    if std == 0:
        p_one = 0.0 if target > mean else 1.0
    else:
        p_one = 0.5 * math.erfc((target - mean) / (std * math.sqrt(2)))
    p_any = 1 - (1 - p_one) ** remaining
    return p_any < config.adaptive_threshold


def _sample_all(
    sampler: Sampler,
    results: list[PromptResult],
    n: int,
    config: RoundConfig,
    first_index: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    completions = sampler.sample(
        [r.conversation for r in results],
        n,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        progress=progress,
        first_index=first_index,
    )
    for result, rows in zip(results, completions, strict=True):
        _add_samples(result, rows)


def _all_scores(result: PromptResult, upto: int | None = None) -> list[float]:
    samples = result.samples if upto is None else result.samples[:upto]
    return [s.score for s in samples if s.score is not None]


def _adaptive_sampling(
    results: list[PromptResult],
    sampler: Sampler,
    scorer: Scorer,
    config: RoundConfig,
    report: Callable[[int, int, str], None],
) -> None:
    total = len(results) * config.n
    drawn = 0
    active = list(results)
    while active:
        have = len(active[0].samples)
        step = config.adaptive_min_samples if have == 0 else config.adaptive_chunk
        step = min(step, config.n - have)

        def sub_progress(done: int, _total: int, base: int = drawn) -> None:
            report(base + done, total, "sampling (adaptive)")

        _sample_all(sampler, active, step, config, have, sub_progress)
        drawn += step * len(active)
        _score(active, scorer)
        still = []
        for r in active:
            # Duplicates count: they are draws from the policy like any other.
            if should_stop(_all_scores(r), config.n - len(r.samples), config):
                r.stopped_early = len(r.samples) < config.n
            else:
                still.append(r)
        active = still


def _replay_adaptive(
    results: Sequence[PromptResult], config: RoundConfig
) -> dict[str, Any]:
    """What adaptive N would have done on these fixed-N samples."""
    changed = samples_used = tokens_used = 0
    for r in results:
        k = min(config.adaptive_min_samples, config.n)
        while not should_stop(_all_scores(r, k), config.n - k, config):
            k = min(k + config.adaptive_chunk, config.n)
        samples_used += k
        tokens_used += sum(s.token_count for s in r.samples[:k])
        if _best_index(r.samples[:k]) != r.best_index:
            changed += 1
    total_tokens = sum(s.token_count for r in results for s in r.samples)
    fixed = len(results) * config.n
    return {
        "samples_adaptive": samples_used,
        "samples_fixed_n": fixed,
        "samples_saved": fixed - samples_used,
        "tokens_adaptive": tokens_used,
        "tokens_fixed_n": total_tokens,
        "tokens_saved": total_tokens - tokens_used,
        "pick_changed": changed,
        "pick_changed_rate": changed / len(results) if results else None,
    }


def _adaptive_report(results: Sequence[PromptResult], n: int) -> dict[str, Any]:
    drawn = sum(len(r.samples) for r in results)
    tokens = sum(s.token_count for r in results for s in r.samples)
    # Tokens the skipped samples would have cost, at each prompt's mean length.
    saved_est = sum(
        (n - len(r.samples)) * sum(s.token_count for s in r.samples) / len(r.samples)
        for r in results
        if r.samples
    )
    # Every sample costs one sequence of decode steps; that is the forward-pass
    # budget best-of-N spends, so saved samples are saved passes.
    return {
        "samples_drawn": drawn,
        "samples_fixed_n": n * len(results),
        "samples_saved": n * len(results) - drawn,
        "tokens_generated": tokens,
        "tokens_saved_estimate": round(saved_est),
        "prompts_stopped_early": sum(r.stopped_early for r in results),
    }


# --------------------------------------------------------------------------------
# pairs
def round_stats(results: Sequence[PromptResult], pairs: Sequence[PairProposal]) -> dict:
    """Reward distribution, diversity, length bias and duplicates of a round."""
    samples = [s for r in results for s in r.samples]
    unique = [s for r in results for s in r.unique]
    scored = [s for s in unique if s.score is not None]
    stats: dict[str, Any] = {
        "prompts": len(results),
        "samples": len(samples),
        "unique_samples": len(unique),
        "duplicates": len(samples) - len(unique),
        "duplicate_rate": (len(samples) - len(unique)) / len(samples) if samples else 0,
        "mean_tokens": (
            sum(s.token_count for s in samples) / len(samples) if samples else None
        ),
        "finish_reasons": {
            reason: sum(s.finish_reason == reason for s in samples)
            for reason in sorted({s.finish_reason for s in samples})
        },
        "diversity": bon_stats.diversity_stats(
            [[s.text for s in r.unique] for r in results]
        ),
        "pairs": len(pairs),
        "pairs_by_strategy": {
            name: sum(p.strategy == name for p in pairs)
            for name in PAIR_STRATEGIES
            if any(p.strategy == name for p in pairs)
        },
    }
    if scored:
        stats["reward"] = bon_stats.reward_stats(
            [[s.score for s in r.unique if s.score is not None] for r in results]
        )
        stats["length_correlation"] = bon_stats.length_correlation(
            [s.token_count for s in scored], [s.score for s in scored]
        )
    return stats


def run_round(
    prompts: Sequence[Conversation],
    sampler: Sampler,
    scorer: Scorer | None,
    config: RoundConfig | None = None,
    progress: RoundProgress | None = None,
    on_samples: Callable[[int, int], None] | None = None,
) -> RoundResult:
    """Run one best-of-N round; see the module docstring.

    Everything that can be checked is checked before sampling starts: the config,
    the prompt list and each prompt's length against the model's context
    (``BadSamplingInput`` and subclasses, which name the prompt's index).
    """
    config = config or RoundConfig()
    config.validate()
    validate_request(
        prompts, config.n, config.max_new_tokens, config.temperature, config.top_p
    )
    sampler.validate(prompts, config.max_new_tokens)
    if config.adaptive and scorer is None:
        raise BadSamplingInput("adaptive N needs a scorer (there is nothing to beat)")

    # Sampling is most of the work: it reports 0..0.9, scoring the rest;
    # on_samples(drawn, planned) gets the sampler's own per-batch counts.
    def report(done: int, total: int, message: str) -> None:
        if on_samples is not None:
            on_samples(done, total)
        if progress is not None:
            progress(min(done / total, 1.0) * 0.9, message)

    results = [
        PromptResult(index=i, conversation=list(conv), samples=[])
        for i, conv in enumerate(prompts)
    ]
    adaptive_info: dict[str, Any] | None = None
    if config.adaptive and not config.adaptive_compare:
        _adaptive_sampling(results, sampler, scorer, config, report)  # type: ignore[arg-type]
        adaptive_info = _adaptive_report(results, config.n)
    else:
        _sample_all(
            sampler,
            results,
            config.n,
            config,
            0,
            lambda done, total: report(done, total, "sampling"),
        )
        if progress is not None:
            progress(0.9, "scoring")
        if scorer is not None:
            _score(results, scorer)
    for r in results:
        r.best_index = _best_index(r.samples)
    if config.adaptive and config.adaptive_compare:
        adaptive_info = _replay_adaptive(results, config)

    pairs = propose_pairs(results, config, scored=scorer is not None)
    stats = round_stats(results, pairs)
    if adaptive_info is not None:
        stats["adaptive"] = adaptive_info
    if progress is not None:
        progress(1.0, "done")
    return RoundResult(config=config, prompts=results, pairs=pairs, stats=stats)
