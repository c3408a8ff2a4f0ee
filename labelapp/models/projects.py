"""Projects, their members and invites."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labelapp.models.common import (
    default_pair_mix,
    default_selection_strategy,
)


class Project(models.Model):
    class SamplerBackend(models.TextChoices):
        # training.sampling.BACKENDS (a test keeps the two lists equal).
        TRANSFORMERS = "transformers", "transformers (in the worker)"
        VLLM = "vllm", "vLLM (in the worker, GPU)"
        OPENAI = "openai", "OpenAI-compatible server"

    name = models.CharField(max_length=200, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="Labels each comparison needs (k)."
    )
    lease_seconds = models.PositiveIntegerField(
        default=600, help_text="How long an annotator holds a comparison."
    )
    undo_grace_seconds = models.PositiveIntegerField(
        default=300,
        help_text="How long an annotator may undo or edit their label while it is "
        "unreviewed (0 turns undo and edit off).",
    )
    gold_rate = models.FloatField(
        default=0.0, help_text="Fraction of served comparisons that are gold items."
    )
    gold_min_count = models.PositiveIntegerField(default=10)
    gold_min_accuracy = models.FloatField(default=0.7)
    pause_flagged_annotators = models.BooleanField(default=False)
    label_scale = models.CharField(
        max_length=32,
        default="llama2-4",
        help_text="Strength scale (Llama 2's four levels).",
    )
    # Rejection sampling.
    policy_ref = models.CharField(
        max_length=300, default="builtin:smollm2-135m-instruct"
    )
    reward_base_ref = models.CharField(max_length=300, default="builtin:minilm-l6")
    n_samples = models.PositiveSmallIntegerField(default=8)
    # Measured, not guessed: docs/benchmarks.md "Sampling defaults for the builtin
    # policy" (bench/sampling_defaults.py, 48 prompts x 4 x 128 tokens): T 0.9 /
    # top-p 0.95 gave 1.23x the relevance of T 1 / top-p 1 at 92 % of its diversity.
    temperature = models.FloatField(default=0.9)
    top_p = models.FloatField(default=0.95)
    max_new_tokens = models.PositiveIntegerField(default=256)
    pairs_per_prompt = models.PositiveSmallIntegerField(default=1)
    pair_mix = models.JSONField(default=default_pair_mix)
    round_ranking_k = models.PositiveSmallIntegerField(
        default=0,
        help_text="0 or 1: rounds propose pairs only; 2-9: each prompt of a round also "
        "gets a ranking task of this many samples (best, worst and between).",
    )
    round_prompt_limit = models.PositiveIntegerField(
        default=32, help_text="Prompts sampled per rejection-sampling round."
    )
    sampler_backend = models.CharField(
        max_length=16,
        choices=SamplerBackend.choices,
        default=SamplerBackend.TRANSFORMERS,
        help_text="What samples a round: transformers or vllm in the worker, or "
        "an OpenAI-compatible server (openai).",
    )
    # Checked by labelapp.services.projects.sampler_config_problems: no secrets,
    # only the name of the environment variable that holds the API key.
    sampler_config = models.JSONField(
        default=dict,
        blank=True,
        help_text="The backend's settings (openai: base_url, model, api_key_env, "
        "mode, timeout_s, max_retries, max_concurrency).",
    )
    # Which open comparisons the queue serves first (issue 17): a name of
    # training.selection.STRATEGIES or a mix {name: weight}; checked by
    # labelapp.services.projects.selection_strategy_problems.
    selection_strategy = models.JSONField(
        default=default_selection_strategy,
        help_text="random (the queue's random order), uncertainty, disagreement, "
        'gap, or a mix such as {"uncertainty": 0.5, "random": 0.5}.',
    )
    # Loop.
    retrain_threshold = models.PositiveIntegerField(
        default=50, help_text="Completed comparisons since the last reward model."
    )
    auto_rounds = models.BooleanField(default=False)
    promote_tolerance = models.FloatField(
        default=0.0, help_text="A new reward model may be this much less accurate."
    )
    rm_config = models.JSONField(default=dict, blank=True)
    # Policy loop (issue 16): a train_policy job after a round with enough usable
    # examples; its settings (training.config.PolicyConfig keys plus the data
    # guard's and the promotion gate's, labelapp.loop.policy) in policy_config.
    auto_policy = models.BooleanField(
        default=False,
        help_text="Train the policy after a round yields enough usable examples.",
    )
    policy_min_examples = models.PositiveIntegerField(
        default=16, help_text="Usable SFT examples (after the data guard) to train on."
    )
    policy_config = models.JSONField(default=dict, blank=True)
    # Drawn once by the first policy job and kept: never trained on.
    policy_eval_prompt_ids = models.JSONField(default=list, blank=True, editable=False)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(overlap__gte=1), name="project_overlap_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1),
                name="project_gold_rate_0_1",
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__gte=10), name="project_lease_gte_10s"
            ),
            models.CheckConstraint(
                condition=Q(n_samples__gte=1), name="project_n_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(temperature__gte=0), name="project_temperature_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(top_p__gt=0) & Q(top_p__lte=1), name="project_top_p_0_1"
            ),
            models.CheckConstraint(
                condition=Q(sampler_backend__in=["transformers", "vllm", "openai"]),
                name="project_sampler_backend_known",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator"
        REVIEWER = "reviewer"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    paused = models.BooleanField(
        default=False, help_text="Paused annotators receive no new comparisons."
    )
    paused_reason = models.CharField(max_length=300, blank=True)
    # Up to when the member has seen the round notices (new pairs from a sampling
    # round); null: never, so every finished round is news.
    rounds_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"], name="membership_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Invite(models.Model):
    """A one-time link that creates an account and makes it a member of a project.
    Only the token's SHA-256 is stored: a database read does not yield a usable
    link (labelapp.services.members)."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="invites"
    )
    role = models.CharField(
        max_length=16,
        choices=Membership.Role.choices,
        default=Membership.Role.ANNOTATOR,
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    def __str__(self) -> str:
        return f"invite to {self.project} ({self.role})"
