"""Data-quality statistics, pure functions over plain data (lists of tuples and
dataclasses; no database), unit-tested against hand-worked examples: annotator
agreement, annotator checks and the reward-model monitor's numbers.

``labelapp.selectors.quality`` reads the database into this plain data;
``labelapp.services.annotators`` pauses the annotators it flags.

Choices are in canonical orientation (``a`` = the response with the lower id). For
agreement the four choices are nominal categories; by default "both bad" is its own
category, because "both bad" vs "tie" is a real disagreement about a pair. Pass
``both_bad="exclude"`` to drop those labels (then alpha describes only the preference
part of the data, the part that enters ``p_a``).

Which labels count: agreement over the *data* (alpha, pairwise agreement) skips
rejected labels, because it describes what the exports contain. Checks of *annotators*
(leave-one-out agreement, position bias, speed, gold accuracy) use every label the
annotator gave, rejected or not: a reviewer rejecting a careless label must not hide
the carelessness from the annotator's record.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from labelapp.models import Choice
from training import metrics

BothBad = Literal["category", "exclude"]
PREFERENCE_CHOICES = (Choice.A.value, Choice.B.value, Choice.TIE.value)
DEFAULT_FAST_THRESHOLD_S = 3.0


# ---------------------------------------------------------------------------
# Plain data
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelObs:
    """One label as the quality functions see it (no ORM objects)."""

    unit: Hashable  # the comparison id
    coder: Hashable  # the annotator id
    choice: str  # canonical: a / b / tie / both_bad
    shown_swapped: bool = False
    duration_ms: int | None = None
    gold_choice: str | None = None  # set only on gold comparisons
    round: int | None = None
    rejected: bool = False


def units_from_observations(
    observations: Iterable[LabelObs], *, both_bad: BothBad = "category"
) -> list[list[str]]:
    """Group labels into units (one list of values per comparison) for alpha."""
    units: dict[Hashable, list[str]] = defaultdict(list)
    for obs in observations:
        if both_bad == "exclude" and obs.choice == Choice.BOTH_BAD:
            continue
        units[obs.unit].append(obs.choice)
    return list(units.values())


# ---------------------------------------------------------------------------
# Agreement (pure)
# ---------------------------------------------------------------------------


class AgreementAccumulator:
    """Single-pass Krippendorff's alpha (nominal) and pairwise percent agreement.

    Feed it one unit (comparison) at a time; it keeps only per-category totals, so
    agreement over millions of labels streams from the database in constant memory.

    Alpha in coincidence-matrix form (Krippendorff 2011, section A):
    o_ck = Σ_u Σ_{i≠j} [v_i=c][v_j=k] / (m_u − 1), n_c = Σ_k o_ck, n = Σ_c n_c,
    α = 1 − (n − 1)·Σ_{c≠k} o_ck / Σ_{c≠k} n_c·n_k. Units with fewer than two values
    are unpairable and contribute nothing.
    """

    def __init__(self) -> None:
        self.disagree_obs = 0.0  # Σ_{c≠k} o_ck
        self.n_c: Counter[Hashable] = Counter()  # pairable values per category
        self.pairs_agree = 0  # unordered label pairs within a unit that agree
        self.pairs_total = 0
        self.units = 0  # units with at least one value
        self.pairable_units = 0
        self.values = 0  # all values, pairable or not

    def add(self, unit: Iterable[Hashable | None]) -> None:
        counts = Counter(v for v in unit if v is not None)
        m = sum(counts.values())
        if m == 0:
            return
        self.units += 1
        self.values += m
        if m < 2:
            return
        self.pairable_units += 1
        sq = sum(c * c for c in counts.values())
        # Ordered pairs (i, j), i ≠ j, with different values: m² − Σ count².
        self.disagree_obs += (m * m - sq) / (m - 1)
        # Each pairable value adds exactly 1 to its category's marginal.
        self.n_c.update(counts)
        self.pairs_agree += (sq - m) // 2
        self.pairs_total += m * (m - 1) // 2

    def alpha(self) -> float | None:
        """``None`` when undefined: no pairable values, or only one category used
        (expected disagreement 0)."""
        n = sum(self.n_c.values())
        if n < 2:
            return None
        # Σ_{c≠k} n_c n_k = n² − Σ n_c².
        disagree_exp = n * n - sum(c * c for c in self.n_c.values())
        if disagree_exp == 0:
            return None
        return 1.0 - (n - 1) * self.disagree_obs / disagree_exp

    def pairwise(self) -> float | None:
        return self.pairs_agree / self.pairs_total if self.pairs_total else None


def _accumulate(units: Iterable[Iterable[Hashable | None]]) -> AgreementAccumulator:
    acc = AgreementAccumulator()
    for unit in units:
        acc.add(unit)
    return acc


def krippendorff_alpha_nominal(
    units: Iterable[Iterable[Hashable | None]],
) -> float | None:
    """Krippendorff's alpha for nominal data with missing values.

    ``units`` holds one iterable per unit (comparison) with the value each coder gave,
    ``None`` where a coder gave none; coder identity does not matter for alpha, so a
    unit may also just list the values it received. See ``AgreementAccumulator``.
    """
    return _accumulate(units).alpha()


def pairwise_agreement(units: Iterable[Iterable[Hashable | None]]) -> float | None:
    """Percent agreement: the share of coder pairs within a unit that gave the same
    value, pooled over all units (each unordered pair of labels counts once)."""
    return _accumulate(units).pairwise()


def annotator_pair_agreement(
    observations: Iterable[LabelObs],
) -> dict[tuple[Hashable, Hashable], dict[str, float | int]]:
    """Percent agreement for every pair of annotators over the units both labelled.

    Keys are ``(coder_1, coder_2)`` with coder_1 < coder_2 (by ``str`` order when the
    ids are not comparable)."""
    by_unit: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for obs in observations:
        by_unit[obs.unit][obs.coder] = obs.choice
    tally: dict[tuple[Hashable, Hashable], list[int]] = defaultdict(lambda: [0, 0])
    for coders in by_unit.values():
        items = sorted(coders.items(), key=lambda kv: _sort_key(kv[0]))
        for i, (c1, v1) in enumerate(items):
            for c2, v2 in items[i + 1 :]:
                t = tally[(c1, c2)]
                t[0] += v1 == v2
                t[1] += 1
    return {
        pair: {"n": n, "agree": agree, "rate": agree / n}
        for pair, (agree, n) in tally.items()
    }


def _sort_key(value: Hashable) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def plurality(values: Iterable[Hashable]) -> Hashable | None:
    """The most frequent value; ``None`` when two values share the top count."""
    ranked = Counter(values).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def leave_one_out_agreement(
    observations: Iterable[LabelObs],
) -> dict[Hashable, dict[str, float | int | None]]:
    """Per annotator: how often their label equals the plurality of the *other*
    annotators' labels on the same comparison. Comparisons where the others are split
    evenly (or no one else labelled) are skipped, so ``n`` can be below the label
    count. Leaving the annotator out keeps their own vote from inflating the score,
    which matters with k = 2 or 3."""
    by_unit: dict[Hashable, list[LabelObs]] = defaultdict(list)
    for obs in observations:
        by_unit[obs.unit].append(obs)
    tally: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for labels in by_unit.values():
        for obs in labels:
            others = plurality(o.choice for o in labels if o.coder != obs.coder)
            if others is None:
                tally.setdefault(obs.coder, [0, 0])
                continue
            t = tally[obs.coder]
            t[0] += obs.choice == others
            t[1] += 1
    return {
        coder: {"n": n, "agree": agree, "rate": agree / n if n else None}
        for coder, (agree, n) in tally.items()
    }


def agreement_block(acc: AgreementAccumulator, coders: set, both_bad: BothBad) -> dict:
    """The agreement numbers of one accumulator, as the quality page and the export
    cards show them."""
    return {
        "alpha": acc.alpha(),
        "pairwise_agreement": acc.pairwise(),
        "n_units": acc.units,
        "n_multi_units": acc.pairable_units,
        "n_labels": acc.values,
        "n_annotators": len(coders),
        "both_bad": both_bad,
    }


def agreement_summary(
    observations: Iterable[LabelObs], *, both_bad: BothBad = "category"
) -> dict[str, Any]:
    """Alpha and pairwise agreement over non-rejected labels (pure)."""
    kept = [o for o in observations if not o.rejected]
    acc = _accumulate(units_from_observations(kept, both_bad=both_bad))
    return agreement_block(acc, {o.coder for o in kept}, both_bad)


# ---------------------------------------------------------------------------
# Annotator checks (pure)
# ---------------------------------------------------------------------------


def displayed_side(choice: str, shown_swapped: bool) -> str | None:
    """Which screen side a label picked: "left", "right", or None for tie / both bad.

    The canonical A is on the left unless the assignment was swapped."""
    if choice == Choice.A:
        return "right" if shown_swapped else "left"
    if choice == Choice.B:
        return "left" if shown_swapped else "right"
    return None


def position_bias(observations: Iterable[LabelObs]) -> dict[Hashable, dict[str, Any]]:
    """Per annotator: share of decisive labels (A or B) that picked the LEFT side.

    ``z`` is the normal-approximation score against a fair coin (|z| > 3 on a few dozen
    labels is worth a look); ties and "both bad" are left out of the denominator."""
    tally: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for obs in observations:
        side = displayed_side(obs.choice, obs.shown_swapped)
        t = tally[obs.coder]
        if side is None:
            continue
        t[0] += side == "left"
        t[1] += 1
    out: dict[Hashable, dict[str, Any]] = {}
    for coder, (left, n) in tally.items():
        out[coder] = {
            "n": n,
            "left": left,
            "left_rate": left / n if n else None,
            "z": (left - n / 2) / math.sqrt(n / 4) if n else None,
        }
    return out


def speed(
    observations: Iterable[LabelObs],
    *,
    fast_threshold_s: float = DEFAULT_FAST_THRESHOLD_S,
) -> dict[Hashable, dict[str, Any]]:
    """Per annotator: median seconds per label and how many labels came in faster than
    ``fast_threshold_s`` (too fast to have read two responses). Labels without a
    duration (imports) are not counted."""
    durations: dict[Hashable, list[float]] = defaultdict(list)
    for obs in observations:
        if obs.duration_ms is not None:
            durations[obs.coder].append(obs.duration_ms / 1000.0)
        else:
            durations.setdefault(obs.coder, [])
    out: dict[Hashable, dict[str, Any]] = {}
    for coder, secs in durations.items():
        fast = sum(s < fast_threshold_s for s in secs)
        out[coder] = {
            "n": len(secs),
            "median_s": statistics.median(secs) if secs else None,
            "fast": fast,
            "fast_rate": fast / len(secs) if secs else None,
            "fast_threshold_s": fast_threshold_s,
        }
    return out


def gold_accuracy(observations: Iterable[LabelObs]) -> dict[Hashable, dict[str, Any]]:
    """Per annotator: accuracy on gold comparisons (labels whose ``gold_choice`` is
    set). A label is correct when its choice equals the gold answer exactly."""
    tally: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for obs in observations:
        if not obs.gold_choice:
            continue
        t = tally[obs.coder]
        t[0] += obs.choice == obs.gold_choice
        t[1] += 1
    return {
        coder: {"n": n, "correct": correct, "accuracy": correct / n if n else None}
        for coder, (correct, n) in tally.items()
    }


def gold_flagged(
    gold: Mapping[Hashable, Mapping[str, Any]], *, min_count: int, min_accuracy: float
) -> list[Hashable]:
    """Annotators with at least ``min_count`` gold labels and accuracy below
    ``min_accuracy``. Fewer gold labels than that is not enough evidence to flag."""
    return sorted(
        (
            coder
            for coder, g in gold.items()
            if g["n"] >= min_count
            and g["accuracy"] is not None
            and g["accuracy"] < min_accuracy
        ),
        key=_sort_key,
    )


# ---------------------------------------------------------------------------
# Reward-model monitor (pure)
# ---------------------------------------------------------------------------


def rm_human_agreement(
    pairs: Iterable[tuple[float | None, float | None, float | None]],
) -> dict[str, Any]:
    """How often the reward model's pick matches the human majority.

    ``pairs`` are ``(reward_a, reward_b, p_a)``. The RM picks the higher reward; humans
    pick A when p_a > 0.5. Pairs with a missing value, equal rewards or p_a = 0.5 have
    no pick on one side and are skipped."""
    agree = n = 0
    for r_a, r_b, p_a in pairs:
        if r_a is None or r_b is None or p_a is None or r_a == r_b or p_a == 0.5:
            continue
        agree += (r_a > r_b) == (p_a > 0.5)
        n += 1
    return {"n": n, "agree": agree, "rate": agree / n if n else None}


def diversity_trend(
    rounds: Iterable[tuple[int, Mapping[str, Any] | None]],
) -> list[dict]:
    """Diversity numbers per round from ``Round.stats``.

    Reads every numeric entry of ``stats["diversity"]`` (e.g. distinct_1, distinct_2,
    self_bleu) and, for older rounds, top-level ``distinct_1``/``distinct_2``. Missing
    or malformed stats give an empty entry rather than an error: the monitor page must
    render for rounds that failed half way."""
    trend = []
    for number, stats in rounds:
        values: dict[str, float] = {}
        stats = stats if isinstance(stats, Mapping) else {}
        div = stats.get("diversity")
        if isinstance(div, Mapping):
            values.update(
                {
                    k: float(v)
                    for k, v in div.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        for key in ("distinct_1", "distinct_2"):
            v = stats.get(key)
            if key not in values and isinstance(v, int | float):
                values[key] = float(v)
        trend.append({"round": number, **values})
    return trend


# Correlations, calibration: one implementation in training.metrics. People read
# these numbers, so a correlation needs at least 3 points here (two give ±1).
pearson = partial(metrics.pearson, min_points=3)
spearman = partial(metrics.spearman, min_points=3)
