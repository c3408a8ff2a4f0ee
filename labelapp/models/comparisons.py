"""Pairwise comparisons, their leases (assignments) and labels."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from labelapp.models.projects import Project
from labelapp.models.prompts import Prompt, Response, Round

# The candidate query's order (labelapp/queue/sql/candidate.sql), as an index can
# serve it: NULLS LAST puts unscored comparisons after the scored, in random order.
QUEUE_ORDER = (
    "project",
    F("priority").desc(),
    F("labels_count").desc(),
    F("selection_score").desc(nulls_last=True),
    "random_key",
)


class Choice(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


# Llama 2's four strength levels (1 = weakest).
STRENGTH_LABELS = {
    4: "significantly better",
    3: "better",
    2: "slightly better",
    1: "negligibly better / unsure",
}


class Comparison(models.Model):
    class Origin(models.TextChoices):
        IMPORT = "import"
        ROUND = "round"
        AUDIT = "audit"
        GOLD = "gold"
        API = "api", "API"  # created through POST /api/v1/comparisons/
        RANKING = "ranking"  # a pair implied by rankings (labelapp.services.rankings)

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        RETIRED = "retired"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="comparisons"
    )
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="comparisons"
    )
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(
        max_length=16, choices=Origin.choices, default=Origin.IMPORT
    )
    round = models.ForeignKey(
        Round,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="comparisons",
    )
    strategy = models.CharField(max_length=32, blank=True)
    priority = models.IntegerField(default=0)
    labels_required = models.PositiveSmallIntegerField()
    labels_count = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OPEN
    )
    is_gold = models.BooleanField(default=False)
    gold_choice = models.CharField(max_length=16, choices=Choice.choices, blank=True)
    # Random key for "then random" ordering that an index can serve.
    random_key = models.FloatField(default=0.0)
    # The project's selection strategy's score under the promoted reward model
    # (labelapp.loop.selection): higher is served sooner, within priority and after
    # "finish what is started"; null (never scored, or strategy random) falls back
    # to random_key.
    selection_score = models.FloatField(null=True, blank=True)
    # Aggregates over accepted labels (labelapp.services.aggregates).
    p_a = models.FloatField(null=True, blank=True)
    majority = models.CharField(max_length=16, choices=Choice.choices, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    mean_strength = models.FloatField(null=True, blank=True)
    both_bad_count = models.PositiveSmallIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Canonical orientation: a pair is stored once, lower response id as A.
            models.CheckConstraint(
                condition=Q(response_a__lt=F("response_b")),
                name="comparison_a_lt_b",
            ),
            models.UniqueConstraint(
                fields=["response_a", "response_b"], name="comparison_unique_pair"
            ),
            models.CheckConstraint(
                condition=Q(labels_required__gte=1), name="comparison_k_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(p_a__isnull=True) | (Q(p_a__gte=0) & Q(p_a__lte=1)),
                name="comparison_p_a_0_1",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | ~Q(gold_choice=""),
                name="comparison_gold_has_answer",
            ),
        ]
        indexes = [
            models.Index(
                *QUEUE_ORDER, condition=Q(status="open"), name="comparison_queue_idx"
            ),
            # Gold items are few; without their own index, serving one would scan
            # the whole open queue.
            models.Index(
                fields=["project", "-priority", "-labels_count", "random_key"],
                condition=Q(status="open", is_gold=True),
                name="comparison_gold_queue_idx",
            ),
            models.Index(fields=["project", "status"]),
            models.Index(fields=["round"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} ({self.status})"


class Assignment(models.Model):
    class State(models.TextChoices):
        LEASED = "leased"
        LABELLED = "labelled"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="assignments"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LEASED)
    swapped = models.BooleanField(help_text="Shown with B on the left.")
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # db_default: the queue's hand-written INSERT (sql/next.sql) does not name it.
    skip_reason = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="Why the annotator skipped (optional).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="assignment_unique"
            )
        ]
        indexes = [
            models.Index(
                fields=["comparison", "expires_at"],
                condition=Q(state="leased"),
                name="assignment_active_idx",
            ),
            models.Index(
                fields=["annotator", "project", "state"], name="assignment_user_idx"
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(state="leased"),
                name="assignment_expiry_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.comparison_id} ({self.state})"


class Label(models.Model):
    class ReviewState(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    class Source(models.TextChoices):
        HUMAN = "human"
        IMPORTED = "imported"
        RANKING = "ranking"  # implied by a ranking; deleted and rewritten with it

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="labels"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="labels"
    )
    assignment = models.OneToOneField(
        Assignment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="label",
    )
    ranking = models.ForeignKey(
        "Ranking",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="implied_labels",
        help_text="The ranking this label's preference is implied by.",
    )
    choice = models.CharField(max_length=16, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    # Preference for A implied by this label (1 A, 0 B, ½ tie; soft for imports);
    # null for "both bad", which is counted but does not enter p_a.
    p_a = models.FloatField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    shown_swapped = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=100, blank=True)
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.HUMAN
    )
    review_state = models.CharField(
        max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING
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
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    edited_at = models.DateTimeField(
        null=True, blank=True, help_text="When its annotator last edited it."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="label_unique"
            ),
            models.CheckConstraint(
                condition=Q(strength__isnull=True)
                | Q(strength__gte=1, strength__lte=4),
                name="label_strength_1_4",
            ),
            models.CheckConstraint(
                condition=Q(p_a__isnull=True) | (Q(p_a__gte=0) & Q(p_a__lte=1)),
                name="label_p_a_0_1",
            ),
            models.CheckConstraint(
                condition=Q(choice="both_bad", p_a__isnull=True)
                | (~Q(choice="both_bad") & Q(p_a__isnull=False)),
                name="label_p_a_matches_choice",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator}: {self.choice} on {self.comparison_id}"

    @property
    def displayed_choice(self) -> str:
        """The choice as the annotator saw it ("a" = the left-hand response): the
        letters a rationale uses. ``choice`` is canonical (a = response_a)."""
        return displayed_choice(self.choice, self.shown_swapped)


_SWAPPED = {Choice.A.value: Choice.B.value, Choice.B.value: Choice.A.value}


def displayed_choice(choice: str, shown_swapped: bool) -> str:
    """A canonical choice in the annotator's left/right terms (and back: the swap is
    its own inverse)."""
    return _SWAPPED.get(choice, choice) if shown_swapped else choice
