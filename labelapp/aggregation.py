"""Per-comparison aggregates over its non-rejected labels, and label review.

``comparison_aggregate_refresh`` runs inside the transaction of every label write and
every review change (with the comparison row locked), so the aggregates are never
stale relative to the labels a reader can see.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labelapp.errors import NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Choice, Comparison, Label, Membership

REVIEW_NOTE_MAX_CHARS = 10_000


@dataclass(frozen=True)
class Aggregate:
    p_a: float | None
    majority: str
    agreement: float | None
    mean_strength: float | None
    both_bad_count: int


def aggregate_labels(labels: list[tuple[str, float | None, int | None]]) -> Aggregate:
    """(choice, p_a, strength) triples -> aggregates.

    p_a is the mean of the labels' p_a; "both bad" has none, so it is left out of p_a
    and counted in both_bad_count instead. The majority is the most frequent choice
    (both_bad included); when several choices share the top count there is no
    majority ("") and agreement is still the top count's share.
    """
    if not labels:
        return Aggregate(None, "", None, None, 0)
    p_values = [p for _, p, _ in labels if p is not None]
    strengths = [s for _, _, s in labels if s is not None]
    counts = Counter(choice for choice, _, _ in labels).most_common()
    top = counts[0][1]
    tied = len(counts) > 1 and counts[1][1] == top
    return Aggregate(
        p_a=sum(p_values) / len(p_values) if p_values else None,
        majority="" if tied else counts[0][0],
        agreement=top / len(labels),
        mean_strength=sum(strengths) / len(strengths) if strengths else None,
        both_bad_count=sum(1 for choice, _, _ in labels if choice == Choice.BOTH_BAD),
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


def can_review(user: AbstractBaseUser, project_id: int) -> bool:
    if user.is_superuser:
        return True
    return Membership.objects.filter(
        project_id=project_id,
        user=user,
        role__in=[Membership.Role.REVIEWER, Membership.Role.ADMIN],
    ).exists()


def label_review(
    *,
    label: Label,
    reviewer: AbstractBaseUser,
    state: str,
    note: str = "",
    now: datetime | None = None,
) -> Label:
    """Accept or reject a label and re-aggregate its comparison in one transaction.

    A rejected label stays stored (and keeps counting towards labels_count, so the
    comparison is not re-opened) but no longer enters the aggregates."""
    if state not in (Label.ReviewState.ACCEPTED, Label.ReviewState.REJECTED):
        raise ValidationFailed("state: must be accepted or rejected")
    if len(note) > REVIEW_NOTE_MAX_CHARS:
        raise ValidationFailed(f"note: at most {REVIEW_NOTE_MAX_CHARS} characters")
    if not can_review(reviewer, label.comparison.project_id):
        raise PermissionDenied("Only reviewers of this project may review its labels.")
    if label.annotator_id == reviewer.pk and not reviewer.is_superuser:
        raise PermissionDenied("You cannot review your own label.")
    now = now or timezone.now()
    with transaction.atomic():
        # Same lock as label_submit takes, so a review and a new label on the same
        # comparison cannot interleave their aggregate refreshes (lost update).
        comparison = Comparison.objects.select_for_update().get(pk=label.comparison_id)
        locked = Label.objects.select_for_update().filter(pk=label.pk).first()
        if locked is None:
            raise NotFound("Label not found.")
        locked.review_state = state
        locked.review_note = note
        locked.reviewed_by = reviewer
        locked.reviewed_at = now
        locked.save(
            update_fields=["review_state", "review_note", "reviewed_by", "reviewed_at"]
        )
        comparison_aggregate_refresh(comparison)
        return locked
