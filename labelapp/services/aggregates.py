"""Per-comparison aggregates over its non-rejected labels.

``comparison_aggregate_refresh`` runs inside the transaction of every label write and
every review change (with the comparison row locked), so the aggregates are never
stale relative to the labels a reader can see.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from labelapp.models import Choice, Comparison, Label


@dataclass(frozen=True, slots=True)
class Aggregate:
    n_labels: int
    n_preference: int  # labels that enter p_a (a, b, tie)
    both_bad_count: int
    p_a: float | None
    majority: str  # "" when the top choices are tied
    agreement: float | None  # share of labels equal to the plurality choice
    mean_strength: float | None


# Strength grades how much better the preferred response is (Llama 2's margin
# levels); a tie or a "both bad" prefers neither, so its strength means nothing
# (the UI sends 1 for it) and would pull the margin of a real preference down.
STRENGTH_CHOICES = frozenset({Choice.A, Choice.B})


def aggregate_labels(
    labels: Iterable[tuple[str, float | None, int | None]],
) -> Aggregate:
    """One comparison's (non-rejected) ``(choice, p_a, strength)`` labels -> its
    aggregates. The one place these are computed: the stored ``Comparison`` fields,
    the label write in ``queue`` and the exports all use it.

    p_a is the mean of the labels' own p_a (1 for A, 0 for B, ½ for a tie, soft for
    imports); "both bad" has none, so it is left out of p_a and counted in
    both_bad_count instead. mean_strength averages the strength of A and B labels
    only (``STRENGTH_CHOICES``). The majority is the most frequent choice (both_bad
    included); when several choices share the top count there is no majority ("")
    and agreement is still the top count's share of all labels.
    """
    counts: Counter[str] = Counter()
    p_values: list[float] = []
    strengths: list[int] = []
    for choice, p_a, strength in labels:
        counts[choice] += 1
        if p_a is not None:
            p_values.append(p_a)
        if strength is not None and choice in STRENGTH_CHOICES:
            strengths.append(strength)
    n = sum(counts.values())
    ranked = counts.most_common(2)
    top = ranked[0][1] if ranked else 0
    tied = len(ranked) > 1 and ranked[1][1] == top
    return Aggregate(
        n_labels=n,
        n_preference=n - counts[Choice.BOTH_BAD],
        both_bad_count=counts[Choice.BOTH_BAD],
        p_a=statistics.fmean(p_values) if p_values else None,
        majority=ranked[0][0] if ranked and not tied else "",
        agreement=top / n if n else None,
        mean_strength=statistics.fmean(strengths) if strengths else None,
    )


def comparison_aggregate_refresh(
    comparison: Comparison, *, also_save: list[str] | tuple[str, ...] = ()
) -> Comparison:
    """Recompute and store the aggregates of ``comparison``. Call it inside the
    transaction that changed its labels, with the comparison row locked.
    ``also_save``: other fields the caller changed, written in the same UPDATE."""
    rows = list(
        Label.objects.filter(comparison_id=comparison.pk)
        .exclude(review_state=Label.ReviewState.REJECTED)
        .values_list("choice", "p_a", "strength")
    )
    agg = aggregate_labels(rows)
    comparison.p_a = agg.p_a
    comparison.majority = agg.majority
    comparison.agreement = agg.agreement
    comparison.mean_strength = agg.mean_strength
    comparison.both_bad_count = agg.both_bad_count
    fields = ["p_a", "majority", "agreement", "mean_strength", "both_bad_count"]
    comparison.save(update_fields=[*fields, *also_save])
    return comparison
