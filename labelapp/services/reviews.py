"""Label review: a reviewer accepts or rejects a label; the comparison's aggregates
are refreshed in the same transaction (``services.aggregates``)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from labelapp import access
from labelapp.errors import NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Comparison, Label
from labelapp.services.aggregates import comparison_aggregate_refresh

REVIEW_NOTE_MAX_CHARS = 10_000


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
    if not access.can_review(user=reviewer, project=label.comparison.project_id):
        raise PermissionDenied("Only reviewers of this project may review its labels.")
    if label.annotator_id == reviewer.pk and not access.can_review_own_label(
        user=reviewer
    ):
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


def labels_bulk_accept(
    *,
    project_id: int,
    reviewer: AbstractBaseUser,
    labels: QuerySet[Label],
    now: datetime | None = None,
) -> int:
    """Accept every label of ``labels`` (a selector's pending labels of one
    project) still pending, and re-aggregate their comparisons, in one
    transaction; returns how many were accepted. The comparisons are locked in id
    order (label_submit and label_review lock one each), so two bulk accepts and
    the queue cannot deadlock; a label reviewed meanwhile keeps that review."""
    if not access.can_review(user=reviewer, project=project_id):
        raise PermissionDenied("Only reviewers of this project may review its labels.")
    if not access.can_review_own_label(user=reviewer):
        labels = labels.exclude(annotator_id=reviewer.pk)
    now = now or timezone.now()
    with transaction.atomic():
        ids = sorted(
            set(
                labels.filter(comparison__project_id=project_id).values_list(
                    "comparison_id", flat=True
                )
            )
        )
        comparisons = list(
            Comparison.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        )
        accepted = labels.filter(
            comparison_id__in=ids, review_state=Label.ReviewState.PENDING
        ).update(
            review_state=Label.ReviewState.ACCEPTED,
            reviewed_by=reviewer,
            reviewed_at=now,
        )
        for comparison in comparisons:
            comparison_aggregate_refresh(comparison)
    return accepted
