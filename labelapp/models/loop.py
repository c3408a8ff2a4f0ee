"""The loop's artefacts: model versions, SFT examples and background jobs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labelapp.models.projects import Project
from labelapp.models.prompts import Prompt, Response, Round


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward"
        POLICY = "policy"

    class Status(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        PROMOTED = "promoted"
        REJECTED = "rejected"
        FAILED = "failed"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REWARD)
    version = models.PositiveIntegerField()
    base_ref = models.CharField(max_length=300)
    artifact_path = models.CharField(max_length=500, blank=True)
    data_fingerprint = models.CharField(max_length=64, blank=True)
    n_pairs = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.TRAINING
    )
    status_reason = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
    )
    job = models.ForeignKey(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "version"], name="modelversion_unique"
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status="promoted"),
                name="modelversion_one_promoted",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.kind} v{self.version} ({self.status})"


class SFTExample(models.Model):
    """The best sample of one prompt in one round: supervised fine-tuning data."""

    round = models.ForeignKey(
        Round, on_delete=models.CASCADE, related_name="sft_examples"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    reward = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["round", "prompt"], name="sft_unique_round_prompt"
            )
        ]

    def __str__(self) -> str:
        return f"round {self.round_id} prompt {self.prompt_id}"


class Job(models.Model):
    class Kind(models.TextChoices):
        TRAIN_RM = "train_rm", "Reward-model training"
        ROUND = "round", "Rejection-sampling round"
        IMPORT = "import", "Import"
        EXPORT = "export", "Export"
        TRAIN_POLICY = "train_policy", "Policy training"
        SCORE_COMPARISONS = "score_comparisons", "Selection scoring"
        STRATEGY_GAIN = "strategy_gain", "Strategy gain"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING)

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    traceback_tail = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1),
                name="job_progress_0_1",
            ),
            # Exports are exempt: each is a separate request for a separate
            # folder, so they queue (issue 15) instead of being refused.
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status__in=["pending", "running"]) & ~Q(kind="export"),
                name="job_one_active_per_project_kind",
            ),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} ({self.status})"
