"""The data guard: which samples of the rounds so far may train the policy.

Pure functions over round samples (no model, no files, no Django). A round is a
list of :class:`GuardPrompt` — a conversation and all its samples, each with its
text, reward, whether it was cut off at the token limit and, where a human looked
at it, whether it was approved. :func:`from_round_result` and
:func:`from_sample_records` build them from ``training.rejection.RoundResult`` and
from the ``samples.jsonl`` that ``python -m training best-of-n`` writes.

SFT (:func:`select_sft`): per prompt, the candidate samples are those that

1. have a reward (``no_reward``: round 0 has no reward model);
2. are not empty (``empty``: an immediate end of turn) and are complete, not cut
   off at the token limit (``truncated``): a cut-off answer scored as if complete
   teaches the policy to stop mid-sentence;
3. are at least ``min_length_ratio`` times as long as the median of the prompt's
   samples, cut-off ones included (``too_short``): the reward models and the
   completeness rule both favour answers that stop early, and a policy trained on
   short picks learns to stop (measured in bench/loop_bench.py: without this floor
   the answers shrank to a quarter of the base's length in two iterations);

The pick is the top sample by reward, and a prompt whose top sample fails 1–3 is
dropped (the name counts it). With ``sft_fallback`` it gives way to the best sample
that passes them (the DPO chosen answer): keeping only prompts whose top sample
qualified left 3 SFT examples of 64 prompts in loop_bench. It is kept only if

4. it beats the median reward of the prompt's samples by more than ``margin``
   (``below_margin``): when every sample is about as good, the pick is noise;
5. a human approved it, when ``require_approved`` (``not_approved``);
6. it is not a duplicate of an example already pooled, from this or an earlier
   round (``duplicate``), compared after collapsing whitespace and case.

Rounds are pooled in order (Llama 2: the best samples of *all* earlier rounds, not
only the last). DPO (:func:`select_pairs`): per prompt, the best *complete* sample
against the worst sample about as long as it (RLHFlow's best-vs-worst, cut-off
samples included: the failures teach too; "about as long": within
``pair_length_band``, so that length is not what the pair teaches); the chosen one is drawn from the complete samples that pass the same length
floor. Prompts are skipped with fewer than two distinct samples, without a complete
sample (``no_complete_sample``), without one long enough (``too_short``), without
a rival within ``pair_length_band`` of the chosen one's length
(``length_mismatch``), or whose reward gap (empty answers are left out) is at most ``pair_margin`` (ties). Every filter counts
what it removed, per round and in total, so the counts go into the round's stats
and the training metrics.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Conversation = list[dict[str, str]]

SFT_FILTERS = (
    "no_reward",
    "empty",
    "truncated",
    "too_short",
    "below_margin",
    "not_approved",
    "duplicate",
)
PAIR_FILTERS = (
    "too_few_samples",
    "no_complete_sample",
    "too_short",
    "length_mismatch",
    "below_margin",
    "duplicate",
)


@dataclass(frozen=True)
class GuardSample:
    text: str
    reward: float | None
    truncated: bool = False
    """Cut off at the token limit (finish reason "length")."""
    approved: bool | None = None
    """A human's verdict where there is one (None: not reviewed)."""


@dataclass
class GuardPrompt:
    conversation: Conversation
    samples: list[GuardSample]
    round: int = 0


@dataclass
class GuardConfig:
    """Settings of the data guard (per project)."""

    margin: float = 0.25
    """The best sample must beat the prompt's median reward by more than this, in
    reward units (0.25 ≈ a 56 % Bradley–Terry preference, the same margin that
    adaptive N samples for)."""
    require_approved: bool = False
    """Keep only SFT examples a human approved."""
    pair_margin: float = 0.0
    """DPO pairs need best − worst reward above this (0: skip exact ties only)."""
    min_length_ratio: float = 0.8
    """The SFT pick and the DPO chosen answer must be at least this share of the
    median length (characters) of the prompt's samples; 0 turns the floor off.
    0.8 is the lower end of the length band eval-policy holds a candidate to."""
    sft_fallback: bool = False
    """When the top sample fails a filter (empty, cut off, too short), take the best
    sample that passes them instead of dropping the prompt. Off by default: with it
    on, the tiny test policy of tests/labelapp/test_policy_loop.py stopped moving in
    a CI dry run (its samples matched the base's; not yet understood). loop_bench
    measured it on (``--sft-fallback``, docs/benchmarks.md)."""
    pair_length_band: float = 1.25
    """A DPO pair's rejected answer is the worst sample whose length is within this
    factor of the chosen one's (longer / shorter), or within LENGTH_SLACK characters
    of it; 0 takes the worst of all. 1.25
    is the upper end of eval-policy's length band."""


@dataclass
class GuardResult:
    examples: list[dict[str, Any]]
    counts: dict[str, int]
    """Totals: ``prompts``, ``kept`` and one entry per filter (what it removed)."""
    per_round: dict[int, dict[str, int]] = field(default_factory=dict)


def _key(conversation: Conversation, text: str) -> tuple[str, ...]:
    def norm(s: str) -> str:
        return re.sub(r"\s+", " ", s).strip().casefold()

    return (
        *(f"{m['role']}\x00{norm(m['content'])}" for m in conversation),
        norm(text),
    )


def _counter(names: Sequence[str]) -> dict[str, int]:
    return {"prompts": 0, **dict.fromkeys(names, 0), "kept": 0}


def _count(result: GuardResult, names: Sequence[str], rnd: int, what: str) -> None:
    result.counts[what] += 1
    result.per_round.setdefault(rnd, _counter(names))[what] += 1


def _distinct(samples: Iterable[GuardSample]) -> list[GuardSample]:
    seen: set[str] = set()
    out = []
    for s in samples:
        if s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out


def _length_floor(samples: Sequence[GuardSample], ratio: float) -> float:
    """The shortest answer the length floor keeps: ``ratio`` times the median
    length of the samples (0 when the floor is off or there are none)."""
    if ratio <= 0 or not samples:
        return 0.0
    return ratio * statistics.median(len(s.text.strip()) for s in samples)


LENGTH_SLACK = 16
"""Characters by which two answers may always differ in the pair length band (a
few characters are no length signal; without it "no" and "yes" never pair)."""


def _about_as_long(a: str, b: str, band: float) -> bool:
    """Whether two answers are within ``band`` (longer / shorter) of each other's
    length, or within LENGTH_SLACK characters."""
    la, lb = len(a.strip()), len(b.strip())
    return abs(la - lb) <= LENGTH_SLACK or max(la, lb) <= band * min(la, lb)


def _best(samples: Sequence[GuardSample]) -> GuardSample | None:
    scored = [s for s in samples if s.reward is not None]
    # max() keeps the first of equal rewards: the earlier sample wins ties, as in
    # training.rejection.
    return max(scored, key=lambda s: s.reward) if scored else None  # type: ignore[arg-type, return-value]


def select_sft(
    rounds: Sequence[Sequence[GuardPrompt]],
    config: GuardConfig | None = None,
    pooled: Iterable[Mapping[str, Any]] = (),
) -> GuardResult:
    """SFT examples ``{"messages": [..., assistant], "reward", "round"}`` from the
    rounds, oldest first (module docstring). ``pooled``: examples already in the
    pool (``{"messages": ...}``); they are not returned, only deduplicated against.
    """
    config = config or GuardConfig()
    seen = set()
    for ex in pooled:
        *conv, last = ex["messages"]
        seen.add(_key(conv, last["content"]))
    result = GuardResult(examples=[], counts=_counter(SFT_FILTERS))
    for rnd_prompts in rounds:
        for prompt in rnd_prompts:
            rnd = prompt.round

            def drop(what: str, rnd: int = rnd) -> None:
                _count(result, SFT_FILTERS, rnd, what)

            drop("prompts")
            scored = [s for s in prompt.samples if s.reward is not None]
            if not scored:
                drop("no_reward")
                continue
            # Without sft_fallback only the top sample is a candidate (each filter
            # then speaks of it); with it, the filters narrow the candidates.
            pool = scored if config.sft_fallback else [_best(scored)]
            nonempty = [s for s in pool if s.text.strip()]  # type: ignore[union-attr]
            if not nonempty:
                drop("empty")
                continue
            complete = [s for s in nonempty if not s.truncated]
            if not complete:
                drop("truncated")
                continue
            floor = _length_floor(prompt.samples, config.min_length_ratio)
            best = _best([s for s in complete if len(s.text.strip()) >= floor])
            if best is None:
                drop("too_short")
                continue
            median = statistics.median(
                s.reward for s in prompt.samples if s.reward is not None
            )
            if not best.reward > median + config.margin:  # type: ignore[operator]
                drop("below_margin")
                continue
            if config.require_approved and best.approved is not True:
                drop("not_approved")
                continue
            key = _key(prompt.conversation, best.text)
            if key in seen:
                drop("duplicate")
                continue
            seen.add(key)
            drop("kept")
            result.examples.append(
                {
                    "messages": [
                        *prompt.conversation,
                        {"role": "assistant", "content": best.text},
                    ],
                    "reward": best.reward,
                    "median_reward": median,
                    "round": rnd,
                }
            )
    return result


def select_pairs(
    rounds: Sequence[Sequence[GuardPrompt]], config: GuardConfig | None = None
) -> GuardResult:
    """DPO pairs in TRL's conversational preference format ``{"prompt",
    "chosen", "rejected"}`` plus ``chosen_reward``/``rejected_reward``/``round``:
    per prompt the best complete sample against the worst sample of about its
    length."""
    config = config or GuardConfig()
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    result = GuardResult(examples=[], counts=_counter(PAIR_FILTERS))
    for rnd_prompts in rounds:
        for prompt in rnd_prompts:
            rnd = prompt.round

            def drop(what: str, rnd: int = rnd) -> None:
                _count(result, PAIR_FILTERS, rnd, what)

            drop("prompts")
            # Empty answers cannot be written as a training completion.
            scored = [
                s
                for s in _distinct(prompt.samples)
                if s.reward is not None and s.text.strip()
            ]
            if len(scored) < 2:
                drop("too_few_samples")
                continue
            complete = [s for s in scored if not s.truncated]
            if not complete:
                drop("no_complete_sample")
                continue
            floor = _length_floor(prompt.samples, config.min_length_ratio)
            chosen = _best([s for s in complete if len(s.text.strip()) >= floor])
            if chosen is None:
                drop("too_short")
                continue
            # The worst of all samples, cut-off ones included: they are the
            # failures the policy should move away from. With a length band, only
            # samples about as long as the chosen one compete, so the pair cannot
            # teach "shorter wins" (measured: without it the rejected answer was the
            # longer one in 35 of 41 pairs, 458 vs 271 characters at the median).
            band = config.pair_length_band
            rivals = [
                s
                for s in scored
                if s is not chosen
                and (not band or _about_as_long(s.text, chosen.text, band))
            ]
            if not rivals:
                drop("length_mismatch")
                continue
            rejected = min(reversed(rivals), key=lambda s: s.reward)  # type: ignore[arg-type, return-value]
            if not chosen.reward - rejected.reward > config.pair_margin:  # type: ignore[operator]
                drop("below_margin")
                continue
            key = (
                _key(prompt.conversation, chosen.text),
                _key(prompt.conversation, rejected.text),
            )
            if key in seen:
                drop("duplicate")
                continue
            seen.add(key)
            drop("kept")
            result.examples.append(
                {
                    "prompt": list(prompt.conversation),
                    "chosen": [{"role": "assistant", "content": chosen.text}],
                    "rejected": [{"role": "assistant", "content": rejected.text}],
                    "chosen_reward": chosen.reward,
                    "rejected_reward": rejected.reward,
                    "round": rnd,
                }
            )
    return result


# ------------------------------------------------------------------- adapters


def from_round_result(result: Any, round_number: int = 0) -> list[GuardPrompt]:
    """Guard input from a ``training.rejection.RoundResult`` (duplicates of a
    sample are left out: they are the same text with the same reward)."""
    return [
        GuardPrompt(
            conversation=list(p.conversation),
            samples=[
                GuardSample(
                    text=s.text,
                    reward=s.score,
                    truncated=s.finish_reason == "length",
                )
                for s in p.samples
                if s.duplicate_of is None
            ],
            round=round_number,
        )
        for p in result.prompts
    ]


def from_sample_records(
    records: Iterable[Mapping[str, Any]], round_number: int = 0
) -> list[GuardPrompt]:
    """Guard input from ``samples.jsonl`` records of ``best-of-n`` (fields
    ``prompt_index``, ``messages``, ``response``, ``score``, ``finish_reason``,
    ``duplicate_of``; an optional ``approved``)."""
    prompts: dict[int, GuardPrompt] = {}
    for r in records:
        if r.get("duplicate_of") is not None:
            continue
        p = prompts.setdefault(
            int(r["prompt_index"]),
            GuardPrompt(list(r["messages"]), [], round=round_number),
        )
        p.samples.append(
            GuardSample(
                text=r["response"],
                reward=r.get("score"),
                truncated=r.get("finish_reason") == "length",
                approved=r.get("approved"),
            )
        )
    return [prompts[k] for k in sorted(prompts)]
