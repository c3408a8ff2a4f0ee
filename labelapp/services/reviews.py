"""Label review: a reviewer accepts or rejects a label (or a ranking, with every
label it implies); the comparisons' aggregates are refreshed in the same
transaction (``services.aggregates``)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from labelapp import access
from labelapp.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Comparison, Label, Ranking, RankingItem
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
    comparison is not re-opened) but no longer enters the aggregates. A label a
    ranking implies is reviewed with its ranking (ranking_review), never alone:
    Conflict, so the ranking's state and its labels' states cannot disagree."""
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
    if label.ranking_id is not None:
        raise Conflict(
            f"Label {label.pk} is implied by ranking {label.ranking_id}; review that "
            "ranking as a whole (POST /api/v1/rankings/"
            f"{label.ranking_id}/review/ or its review page)."
        )
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


def ranking_review(
    *,
    ranking: Ranking,
    reviewer: AbstractBaseUser,
    state: str,
    note: str = "",
    now: datetime | None = None,
) -> Ranking:
    """Accept or reject a ranking as a whole: the ranking and every label it
    implies get ``state`` (and the note, reviewer and time), and the implied
    comparisons are re-aggregated, in one transaction. As for a label, a rejected
    ranking stays stored and keeps its slot (the item is not re-opened), but its
    labels no longer enter the aggregates, the exports or reward-model training.

    A pair the annotator had labelled pairwise keeps that label, which is not the
    ranking's (see labelapp.services.rankings), so it is not touched here.

    Lock order: the item, then the ranking, then the comparisons in id order, then
    the labels: ranking_submit's order (item first) and label_review's
    (comparison before label), so a review, a re-ranking and a label review of the
    same pairs cannot deadlock or interleave their aggregate refreshes."""
    if state not in (Label.ReviewState.ACCEPTED, Label.ReviewState.REJECTED):
        raise ValidationFailed("state: must be accepted or rejected")
    if len(note) > REVIEW_NOTE_MAX_CHARS:
        raise ValidationFailed(f"note: at most {REVIEW_NOTE_MAX_CHARS} characters")
    item = RankingItem.objects.filter(pk=ranking.item_id).only("project_id").first()
    if item is None:
        raise NotFound("Ranking not found.")
    if not access.can_review(user=reviewer, project=item.project_id):
        raise PermissionDenied(
            "Only reviewers of this project may review its rankings."
        )
    if ranking.annotator_id == reviewer.pk and not access.can_review_own_label(
        user=reviewer
    ):
        raise PermissionDenied("You cannot review your own ranking.")
    now = now or timezone.now()
    with transaction.atomic():
        RankingItem.objects.select_for_update().filter(pk=ranking.item_id).first()
        locked = Ranking.objects.select_for_update().filter(pk=ranking.pk).first()
        if locked is None:
            raise NotFound("Ranking not found.")
        implied = Label.objects.filter(ranking=locked)
        ids = sorted(set(implied.values_list("comparison_id", flat=True)))
        comparisons = list(
            Comparison.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        )
        fields = {
            "review_state": state,
            "review_note": note,
            "reviewed_by": reviewer,
            "reviewed_at": now,
        }
        implied.update(**fields)
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=list(fields))
        for comparison in comparisons:
            comparison_aggregate_refresh(comparison)
    return locked
