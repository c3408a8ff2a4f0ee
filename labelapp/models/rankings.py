"""Ranking mode: K responses to one prompt, ranked by each annotator."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labelapp.models.comparisons import (
    Label,
)
from labelapp.models.projects import Project
from labelapp.models.prompts import Prompt


class RankingItem(models.Model):
    """A prompt with K responses (2..9) to be ranked; ``response_ids`` in the order
    they are shown. Each annotator ranks it at most once (``Ranking``)."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="ranking_items"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    response_ids = models.JSONField(help_text="The K response ids, as shown.")
    # The sorted ids joined by commas: the same K responses are one item.
    responses_key = models.CharField(max_length=200)
    labels_required = models.PositiveSmallIntegerField(default=1)
    labels_count = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OPEN
    )
    # A gold item grades annotators: its known order, tiers of response ids best
    # first (labelapp.services.gold.ranking_item_mark_gold checks it). Served at
    # the project's gold rate, as gold comparisons are (labelapp.queue.rankings).
    is_gold = models.BooleanField(default=False)
    gold_tiers = models.JSONField(
        null=True, blank=True, help_text="The known order of a gold item."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "responses_key"], name="rankingitem_unique"
            ),
            models.CheckConstraint(
                condition=Q(labels_required__gte=1), name="rankingitem_k_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_tiers__isnull=False),
                name="rankingitem_gold_has_order",
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "is_gold", "-labels_count", "id"],
                condition=Q(status="open"),
                name="rankingitem_queue_idx",
            )
        ]

    def __str__(self) -> str:
        return f"ranking item #{self.pk} ({len(self.response_ids)} responses)"


class Ranking(models.Model):
    """One annotator's order over a ranking item's responses: ``tiers`` is a list
    of lists of response ids, best first (a tier of several is a tie); responses
    in no tier are unranked (a top-k ranking)."""

    item = models.ForeignKey(
        RankingItem, on_delete=models.CASCADE, related_name="rankings"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    tiers = models.JSONField()
    source = models.CharField(
        max_length=16, choices=Label.Source.choices, default=Label.Source.HUMAN
    )
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # Reviewed as a whole (labelapp.services.reviews.ranking_review): the state is
    # copied onto every label the ranking implies, in the same transaction.
    review_state = models.CharField(
        max_length=16,
        choices=Label.ReviewState.choices,
        default=Label.ReviewState.PENDING,
    )
    review_note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="ranking_unique")
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on ranking item {self.item_id}"


class RankingAssignment(models.Model):
    """One annotator's lease on one ranking item (labelapp.queue.rankings), as
    ``Assignment`` is for a comparison: live while ``state`` is leased and
    ``expires_at`` is in the future. One per (item, annotator)."""

    class State(models.TextChoices):
        LEASED = "leased"
        RANKED = "ranked"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    item = models.ForeignKey(
        RankingItem, on_delete=models.CASCADE, related_name="assignments"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="ranking_assignments",
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "annotator"], name="rankingassignment_unique"
            )
        ]
        indexes = [
            models.Index(
                fields=["item", "expires_at"],
                condition=Q(state="leased"),
                name="rankingassignment_active_idx",
            ),
            models.Index(
                fields=["annotator", "project", "state"],
                name="rankingassignment_user_idx",
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(state="leased"),
                name="rankingassignment_expiry_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on ranking item {self.item_id} ({self.state})"
