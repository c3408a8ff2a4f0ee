"""Prompts, rounds of rejection sampling and the responses they hold."""

from __future__ import annotations

from django.db import models

from labelapp.models.projects import Project


class Prompt(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="prompts"
    )
    messages = models.JSONField(help_text="Conversation: list of {role, content}.")
    content_hash = models.CharField(max_length=64)
    external_id = models.CharField(
        max_length=200, blank=True, help_text="Source id (e.g. MT-bench question_id)."
    )
    source = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="prompt_unique_content"
            )
        ]
        indexes = [models.Index(fields=["project", "external_id"])]

    def __str__(self) -> str:
        last = self.messages[-1]["content"] if self.messages else ""
        return last[:80]


class Round(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="rounds"
    )
    number = models.PositiveIntegerField()
    policy_ref = models.CharField(max_length=300)
    policy_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reward_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    settings = models.JSONField(default=dict)
    stats = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RUNNING
    )
    job = models.ForeignKey(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "number"], name="round_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project} round {self.number}"


class Response(models.Model):
    class Origin(models.TextChoices):
        IMPORT = "import"
        ROUND = "round"
        HUMAN = "human"
        AUDIT = "audit"  # a policy candidate's or the current policy's eval sample

    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="responses"
    )
    text = models.TextField()
    text_hash = models.CharField(max_length=64)
    origin = models.CharField(
        max_length=16, choices=Origin.choices, default=Origin.IMPORT
    )
    round = models.ForeignKey(
        Round,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="responses",
    )
    model_ref = models.CharField(max_length=300, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    reward = models.FloatField(null=True, blank=True, help_text="Latest reward score.")
    reward_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "text_hash"], name="response_unique_text"
            )
        ]

    def __str__(self) -> str:
        return self.text[:80]
