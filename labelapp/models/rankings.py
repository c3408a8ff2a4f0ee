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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "responses_key"], name="rankingitem_unique"
            ),
            models.CheckConstraint(
                condition=Q(labels_required__gte=1), name="rankingitem_k_gte_1"
            ),
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="ranking_unique")
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on ranking item {self.item_id}"
