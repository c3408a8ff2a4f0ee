"""Pairloop's domain model. Every invariant the database can hold is a constraint here;
the rest (a comparison's responses belong to its prompt) is enforced in services.py."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import models
from django.db.models import F, Q


def content_hash(value: object) -> str:
    """SHA-256 of a canonical JSON encoding (stable across key order)."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Size limits of one prompt and one text, the same for the API's serializers and for
# import_data: one answer to "how long may a response be".
MAX_MESSAGES = 200
MAX_TEXT_CHARS = 200_000


DEFAULT_PAIR_MIX = {
    "best_vs_runner_up": 0.4,
    "best_vs_random": 0.2,
    "closest": 0.2,
    "random": 0.2,
}


def default_pair_mix() -> dict[str, float]:
    return dict(DEFAULT_PAIR_MIX)


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
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    max_new_tokens = models.PositiveIntegerField(default=256)
    pairs_per_prompt = models.PositiveSmallIntegerField(default=1)
    pair_mix = models.JSONField(default=default_pair_mix)
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

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"], name="membership_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


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
                fields=["project", "-priority", "-labels_count", "random_key"],
                condition=Q(status="open"),
                name="comparison_queue_idx",
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
    kind = models.CharField(max_length=16, choices=Kind.choices)
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
