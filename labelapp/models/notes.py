"""Discussion notes on a label: reviewers and admins write them, the label's
annotator reads them (and may answer); ``read_at`` is when the annotator saw a
note, so the home page can count the unread ones."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual

from labelapp.models.comparisons import Label

NOTE_MAX_CHARS = 2000
NOTES_PER_LABEL_MAX = 50


class LabelNote(models.Model):
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set when the label's annotator has seen the note; notes they wrote
    # themselves are born read.
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    GreaterThanOrEqual(Length("body"), 1),
                    LessThanOrEqual(Length("body"), NOTE_MAX_CHARS),
                ),
                name="labelnote_body_1_2000",
            ),
        ]
        indexes = [models.Index(fields=["label", "created_at"])]

    def __str__(self) -> str:
        return f"note by {self.author} on label {self.label_id}"
