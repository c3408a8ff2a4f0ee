"""Data quality: annotator agreement, annotator checks and the reward-model monitor.

The module has two halves:

* pure functions over plain data (lists of tuples / dataclasses), unit-tested against
  hand-worked examples, and
* selectors (``*_for_project`` / ``reward_monitor``) that read the database into that
  plain data, plus one service, ``annotators_flag_and_pause``, that writes.

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
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Literal

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Length

from labelapp.models import (
    Choice,
    Comparison,
    Label,
    Membership,
    ModelVersion,
    Project,
    Response,
    Round,
)

BothBad = Literal["category", "exclude"]
PREFERENCE_CHOICES = (Choice.A.value, Choice.B.value, Choice.TIE.value)
DEFAULT_FAST_THRESHOLD_S = 3.0
# Per-label values fetched from the DB; kept in one place so the selectors agree.
_CHUNK = 5000


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


def sigmoid(x: float) -> float:
    # Split by sign so exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def expected_calibration_error(
    probs: Sequence[float], targets: Sequence[float], *, bins: int = 10
) -> float | None:
    """ECE with equal-width bins: Σ_b |B|/n · |mean(prob in B) − mean(target in B)|.

    ``targets`` may be soft (p_a ∈ [0, 1]), which is what the seed's loss trains on.
    """
    if len(probs) != len(targets):
        raise ValueError("probs and targets differ in length")
    if not probs:
        return None
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for p, t in zip(probs, targets, strict=True):
        b = min(int(p * bins), bins - 1)
        s = sums[b]
        s[0] += p
        s[1] += t
        s[2] += 1
    n = len(probs)
    return sum(abs(s[0] - s[1]) / n for s in sums.values())


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r; ``None`` with fewer than 3 points or a constant variable."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


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


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho as Pearson's r over tie-averaged ranks."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    return pearson(ranks(xs), ranks(ys))


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


# ---------------------------------------------------------------------------
# Selectors (read the DB)
# ---------------------------------------------------------------------------


def label_observations(
    *,
    project: Project,
    round_number: int | None = None,
    include_rejected: bool = True,
    gold_only: bool = False,
) -> list[LabelObs]:
    """The project's labels as ``LabelObs``, read in chunks. A list is fine here: the
    agreement functions need all labels of a unit together, and a LabelObs is small
    (about 150 bytes); exports, which are large, stream instead."""
    qs = Label.objects.filter(comparison__project=project)
    if round_number is not None:
        qs = qs.filter(comparison__round__number=round_number)
    if not include_rejected:
        qs = qs.exclude(review_state=Label.ReviewState.REJECTED)
    if gold_only:
        qs = qs.filter(comparison__is_gold=True)
    rows = qs.values_list(
        "comparison_id",
        "annotator_id",
        "choice",
        "shown_swapped",
        "duration_ms",
        "comparison__is_gold",
        "comparison__gold_choice",
        "comparison__round__number",
        "review_state",
    ).order_by("comparison_id", "annotator_id")
    return [
        LabelObs(
            unit=cid,
            coder=uid,
            choice=choice,
            shown_swapped=swapped,
            duration_ms=dur,
            gold_choice=gold_choice if is_gold else None,
            round=rnd,
            rejected=state == Label.ReviewState.REJECTED,
        )
        for (
            cid,
            uid,
            choice,
            swapped,
            dur,
            is_gold,
            gold_choice,
            rnd,
            state,
        ) in rows.iterator(chunk_size=_CHUNK)
    ]


def _summary(acc: AgreementAccumulator, coders: set, both_bad: BothBad) -> dict:
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
    return _summary(acc, {o.coder for o in kept}, both_bad)


def project_agreement(
    *, project: Project, both_bad: BothBad = "category"
) -> dict[str, Any]:
    """Alpha and pairwise agreement (non-rejected labels) for the whole project and
    per round (by number; comparisons outside any round, e.g. imports, appear under
    ``None``).

    Streams the labels ordered by comparison and feeds one comparison at a time to
    accumulators, so memory does not grow with the project (exports call this for
    their dataset card)."""
    qs = Label.objects.filter(comparison__project=project).exclude(
        review_state=Label.ReviewState.REJECTED
    )
    if both_bad == "exclude":
        qs = qs.exclude(choice=Choice.BOTH_BAD)
    rows = (
        qs.order_by("comparison_id")
        .values_list(
            "comparison_id", "comparison__round__number", "choice", "annotator_id"
        )
        .iterator(chunk_size=_CHUNK)
    )
    total = AgreementAccumulator()
    coders: set[int] = set()
    per_round: dict[int | None, AgreementAccumulator] = {}
    round_coders: dict[int | None, set[int]] = defaultdict(set)
    for (_cid, rnd), unit_rows in groupby(rows, key=lambda r: (r[0], r[1])):
        values = []
        for *_, choice, uid in unit_rows:
            values.append(choice)
            coders.add(uid)
            round_coders[rnd].add(uid)
        total.add(values)
        per_round.setdefault(rnd, AgreementAccumulator()).add(values)
    return {
        **_summary(total, coders, both_bad),
        "rounds": [
            {"round": r, **_summary(per_round[r], round_coders[r], both_bad)}
            for r in sorted(per_round, key=lambda r: (r is not None, r or 0))
        ],
    }


def annotator_stats(
    *, project: Project, fast_threshold_s: float = DEFAULT_FAST_THRESHOLD_S
) -> list[dict[str, Any]]:
    """One row per annotator who labelled in the project: label count, leave-one-out
    agreement, position bias, speed, gold accuracy and whether they are flagged."""
    from django.contrib.auth import get_user_model

    obs = label_observations(project=project, include_rejected=True)
    loo = leave_one_out_agreement(obs)
    bias = position_bias(obs)
    spd = speed(obs, fast_threshold_s=fast_threshold_s)
    gold = gold_accuracy(obs)
    flagged = set(
        gold_flagged(
            gold,
            min_count=project.gold_min_count,
            min_accuracy=project.gold_min_accuracy,
        )
    )
    counts = Counter(o.coder for o in obs)
    rejected = Counter(o.coder for o in obs if o.rejected)
    users = get_user_model().objects.in_bulk(list(counts))
    paused = dict(
        Membership.objects.filter(project=project).values_list("user_id", "paused")
    )
    return [
        {
            "user_id": uid,
            "username": users[uid].get_username() if uid in users else str(uid),
            "n_labels": counts[uid],
            "n_rejected": rejected[uid],
            "loo_agreement": loo.get(uid),
            "position_bias": bias.get(uid),
            "speed": spd.get(uid),
            "gold": gold.get(uid, {"n": 0, "correct": 0, "accuracy": None}),
            "flagged": uid in flagged,
            "paused": paused.get(uid, False),
        }
        for uid in sorted(counts)
    ]


def _gold_for_project(project: Project) -> dict[Hashable, dict[str, Any]]:
    return gold_accuracy(
        o for o in label_observations(project=project, gold_only=True) if o.gold_choice
    )


def annotators_flagged(*, project: Project) -> list[int]:
    """User ids under the project's gold accuracy bar (see ``gold_flagged``)."""
    gold = _gold_for_project(project)
    return [
        int(uid)
        for uid in gold_flagged(
            gold,
            min_count=project.gold_min_count,
            min_accuracy=project.gold_min_accuracy,
        )
    ]


def annotators_flag_and_pause(*, project: Project) -> list[int]:
    """Service: flag annotators below the gold bar and, when the project says so,
    pause their memberships (paused annotators get no new comparisons; existing
    labels stay). Returns the ids of the users paused by this call; already paused
    members are left alone so an admin's own pause reason is kept. Annotators without
    a membership (imported labels) have nothing to pause."""
    if not project.pause_flagged_annotators:
        return []
    gold = _gold_for_project(project)
    flagged = gold_flagged(
        gold, min_count=project.gold_min_count, min_accuracy=project.gold_min_accuracy
    )
    if not flagged:
        return []
    paused: list[int] = []
    with transaction.atomic():
        # Lock the rows so a concurrent admin "unpause" is not overwritten by a stale
        # read: whoever commits last wins, and both see the other's committed state.
        members = Membership.objects.select_for_update().filter(
            project=project, user_id__in=flagged, paused=False
        )
        for m in members:
            g = gold[m.user_id]
            m.paused = True
            m.paused_reason = (
                f"Gold accuracy {g['accuracy']:.0%} on {g['n']} gold labels is below "
                f"{project.gold_min_accuracy:.0%}."
            )[:300]
            m.save(update_fields=["paused", "paused_reason"])
            paused.append(m.user_id)
    return sorted(paused)


def _comparison_rewards(qs: Any) -> list[dict[str, Any]]:
    return list(
        qs.filter(
            p_a__isnull=False,
            response_a__reward__isnull=False,
            response_b__reward__isnull=False,
        )
        .values(
            "p_a",
            "strategy",
            r_a=F("response_a__reward"),
            r_b=F("response_b__reward"),
        )
        .iterator(chunk_size=_CHUNK)
    )


def _rm_block(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement (overall and on best-vs-runner-up pairs) and calibration."""
    triples = [(r["r_a"], r["r_b"], r["p_a"]) for r in rows]
    bvr = [
        (r["r_a"], r["r_b"], r["p_a"])
        for r in rows
        if r["strategy"] == "best_vs_runner_up"
    ]
    probs = [sigmoid(r["r_a"] - r["r_b"]) for r in rows]
    return {
        "agreement": rm_human_agreement(triples),
        "agreement_best_vs_runner_up": rm_human_agreement(bvr),
        "ece": expected_calibration_error(probs, [r["p_a"] for r in rows]),
        "n_pairs": len(rows),
    }


def reward_monitor(*, project: Project) -> dict[str, Any]:
    """Reward-model monitor for the project.

    * ``rounds``: per rejection-sampling round, RM–human agreement on the round's
      human-labelled pairs (overall and ``best_vs_runner_up``), calibration (ECE of
      σ(r_a − r_b) against p_a), and reward-vs-length correlation over the round's
      responses (characters; tokens where every response has a token count).
    * ``versions``: per reward ModelVersion, the same agreement and calibration over
      labelled pairs whose two responses were last scored by that version.
      ``Response.reward`` keeps only the latest score, so an old version is judged on
      the pairs it still owns; rescoring moves pairs to the newer version.
    * ``diversity``: the diversity numbers from each round's stats, in round order.
    """
    labelled = Comparison.objects.filter(project=project)
    rounds = list(
        Round.objects.filter(project=project)
        .order_by("number")
        .values("id", "number", "stats", "reward_version__version")
    )
    round_rows = []
    for r in rounds:
        block = _rm_block(_comparison_rewards(labelled.filter(round_id=r["id"])))
        resp = list(
            Response.objects.filter(round_id=r["id"], reward__isnull=False)
            .annotate(chars=Length("text"))
            .values_list("reward", "chars", "token_count")
            .iterator(chunk_size=_CHUNK)
        )
        rewards = [x[0] for x in resp]
        chars = [float(x[1]) for x in resp]
        tokens = [x[2] for x in resp]
        has_tokens = bool(tokens) and all(t is not None for t in tokens)
        round_rows.append(
            {
                "round": r["number"],
                "reward_version": r["reward_version__version"],
                **block,
                "length": {
                    "n": len(resp),
                    "pearson_chars": pearson(rewards, chars),
                    "spearman_chars": spearman(rewards, chars),
                    "pearson_tokens": pearson(rewards, [float(t) for t in tokens])
                    if has_tokens
                    else None,
                    "spearman_tokens": spearman(rewards, [float(t) for t in tokens])
                    if has_tokens
                    else None,
                },
            }
        )
    versions = []
    for mv in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.REWARD
    ).order_by("version"):
        qs = labelled.filter(
            Q(response_a__reward_version=mv) & Q(response_b__reward_version=mv)
        )
        versions.append(
            {
                "version": mv.version,
                "status": mv.status,
                **_rm_block(_comparison_rewards(qs)),
            }
        )
    return {
        "rounds": round_rows,
        "versions": versions,
        "diversity": diversity_trend((r["number"], r["stats"]) for r in rounds),
    }


def project_quality_report(
    *, project: Project, fast_threshold_s: float = DEFAULT_FAST_THRESHOLD_S
) -> dict[str, Any]:
    """Everything the quality page shows, in one JSON-serialisable dict:
    agreement (project and per round), per-annotator checks, agreement between each
    pair of annotators (non-rejected labels), and the reward-model monitor."""
    stats = annotator_stats(project=project, fast_threshold_s=fast_threshold_s)
    names = {s["user_id"]: s["username"] for s in stats}
    pairs = annotator_pair_agreement(
        label_observations(project=project, include_rejected=False)
    )
    return {
        "agreement": project_agreement(project=project),
        "annotators": stats,
        "annotator_pairs": [
            {"a": names.get(a, str(a)), "b": names.get(b, str(b)), **v}
            for (a, b), v in sorted(pairs.items(), key=lambda kv: kv[0])
        ],
        "flagged": [s["user_id"] for s in stats if s["flagged"]],
        "reward_monitor": reward_monitor(project=project),
        "thresholds": {
            "fast_threshold_s": fast_threshold_s,
            "gold_min_count": project.gold_min_count,
            "gold_min_accuracy": project.gold_min_accuracy,
        },
    }
