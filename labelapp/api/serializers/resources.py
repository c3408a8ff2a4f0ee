"""The resources' serializers: projects, prompts, responses, comparisons, labels, rounds, jobs, members."""

from __future__ import annotations

from rest_framework import serializers

from labelapp import access
from labelapp.api.serializers.common import (
    _CHECKED,
    GOLD_HELP,
    MAJORITY_HELP,
    AdministeredProjectField,
    SafeJSONField,
    _check_choice,
    enum_field,
    validate_pair_mix,
    validate_policy_config,
    validate_rm_config,
    validate_selection_strategy,
)
from labelapp.models import (
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    Assignment,
    Choice,
    Comparison,
    Job,
    Label,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    Response,
    Round,
)
from labelapp.services.projects import (
    SAMPLER_BACKENDS,
    project_settings_problems,
    top_p_problems,
)


class ProjectSerializer(serializers.ModelSerializer):
    pair_mix = SafeJSONField(
        required=False,
        validators=[validate_pair_mix],
        help_text="Share of proposed pairs per strategy (best_vs_runner_up, "
        "best_vs_random, closest, random, disagreement, gap); weights >= 0, not "
        "all 0.",
    )
    selection_strategy = SafeJSONField(
        required=False,
        validators=[validate_selection_strategy],
        help_text="Which open comparisons the queue serves first, within priority "
        "and after those already started: random (default), uncertainty, "
        "disagreement, gap, or a mix such as "
        '{"uncertainty": 0.5, "random": 0.5}.',
    )
    rm_config = SafeJSONField(
        required=False,
        validators=[validate_rm_config],
        help_text="Reward-model training settings (training.config.RewardConfig "
        "fields, plus warm_start).",
    )
    policy_config = SafeJSONField(
        required=False,
        validators=[validate_policy_config],
        help_text="Policy training settings (training.config.PolicyConfig fields) "
        "plus the data guard's and the promotion gate's (docs/loop.md).",
    )

    sampler_backend = enum_field(
        list(SAMPLER_BACKENDS),
        required=False,
        help_text="What samples a round: transformers or vllm in the worker, or "
        "openai (an OpenAI-compatible server named in sampler_config).",
    )
    sampler_config = SafeJSONField(
        required=False,
        help_text="The backend's settings; openai: base_url and model (required), "
        "api_key_env (the NAME of the worker's environment variable holding the "
        "key; secrets are refused), mode (chat or completions), timeout_s, "
        "max_retries, max_concurrency. transformers and vllm take none ({}).",
    )

    class Meta:
        model = Project
        exclude = ["members"]
        read_only_fields = ["created_at"]
        extra_kwargs = _CHECKED

    def validate_top_p(self, value: float) -> float:
        if problems := top_p_problems(value):
            raise serializers.ValidationError(problems[0])
        return value

    def validate(self, attrs: dict) -> dict:
        # The config is checked against the backend it will run with: a PATCH of
        # one of the two is checked against the other's stored value.
        sampler = {
            k: attrs[k] for k in ("sampler_backend", "sampler_config") if k in attrs
        }
        if problems := project_settings_problems(sampler, project=self.instance):
            raise serializers.ValidationError(problems)
        return attrs


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(max_length=MAX_TEXT_CHARS, allow_blank=True)


class PromptSerializer(serializers.ModelSerializer):
    project = AdministeredProjectField()
    messages = MessageSerializer(many=True, max_length=MAX_MESSAGES, min_length=1)

    class Meta:
        model = Prompt
        fields = ["id", "project", "messages", "external_id", "source", "created_at"]
        read_only_fields = ["created_at"]


ROUND_HELP = "The round's number within its project, as the UI and exports show it."
ROUND_ID_HELP = "The round's id (GET /api/v1/rounds/<id>/); null when none."


def _refuse_round_in_input(serializer: serializers.Serializer) -> None:
    """``round`` used to be the id a client wrote; it is now the (read-only) number.
    One sent is refused, naming the field to use, rather than silently ignored."""
    data = getattr(serializer, "initial_data", None)
    if hasattr(data, "keys") and "round" in data:
        raise serializers.ValidationError(
            {"round": ["Read-only: the round number. Send round_id (the round's id)."]}
        )


def _round_number_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        source="round.number", read_only=True, allow_null=True, help_text=ROUND_HELP
    )


def _round_id_field() -> serializers.PrimaryKeyRelatedField:
    return serializers.PrimaryKeyRelatedField(
        source="round",
        queryset=Round.objects.all(),
        required=False,
        allow_null=True,
        help_text=ROUND_ID_HELP,
    )


class ResponseSerializer(serializers.ModelSerializer):
    origin = enum_field(Response.Origin.values, required=False)
    text = serializers.CharField(max_length=MAX_TEXT_CHARS)
    # "round" is the number the UI and exports show; the id is "round_id".
    round = _round_number_field()
    round_id = _round_id_field()

    class Meta:
        model = Response
        fields = [
            "id",
            "prompt",
            "text",
            "origin",
            "round",
            "round_id",
            "model_ref",
            "token_count",
            "finish_reason",
            "reward",
            "reward_version",
            "created_at",
        ]
        read_only_fields = [
            "token_count",
            "finish_reason",
            "reward",
            "reward_version",
            "created_at",
        ]

    def validate(self, attrs: dict) -> dict:
        _refuse_round_in_input(self)
        return attrs

    def validate_prompt(self, prompt: Prompt) -> Prompt:
        if not access.can_admin(
            user=self.context["request"].user, project=prompt.project_id
        ):
            raise serializers.ValidationError("Invalid pk - object does not exist.")
        return prompt


class ComparisonSerializer(serializers.ModelSerializer):
    project = AdministeredProjectField()
    origin = enum_field(Comparison.Origin.values, required=False)
    status = enum_field(Comparison.Status.values, read_only=True)
    # Plain strings, not enums: the schema already names this value set ChoiceEnum,
    # and drf-spectacular warns when one set gets several names.
    gold_choice = serializers.CharField(
        required=False, allow_blank=True, help_text=GOLD_HELP
    )
    majority = serializers.CharField(read_only=True, help_text=MAJORITY_HELP)
    # "round" is the number the UI and exports show; the id is "round_id".
    round = _round_number_field()
    round_id = _round_id_field()

    def validate_gold_choice(self, value: str) -> str:
        return _check_choice(value)

    labels_required = serializers.IntegerField(
        min_value=1, max_value=100, required=False
    )

    def validate(self, attrs: dict) -> dict:
        _refuse_round_in_input(self)
        # The gold rules (CHECK comparison_gold_has_answer among them) are the
        # gold service's: services.gold.gold_choice_check, one rule.
        return attrs

    class Meta:
        model = Comparison
        fields = [
            "id",
            "project",
            "prompt",
            "response_a",
            "response_b",
            "origin",
            "round",
            "round_id",
            "strategy",
            "priority",
            "labels_required",
            "labels_count",
            "status",
            "is_gold",
            "gold_choice",
            "p_a",
            "majority",
            "agreement",
            "mean_strength",
            "both_bad_count",
            "completed_at",
            "created_at",
        ]
        read_only_fields = [
            "prompt",
            "labels_count",
            "p_a",
            "majority",
            "agreement",
            "mean_strength",
            "both_bad_count",
            "completed_at",
            "created_at",
        ]


class ComparisonUpdateSerializer(serializers.ModelSerializer):
    """What may change after creation: order, k, retiring, and the gold answer."""

    labels_required = serializers.IntegerField(min_value=1, max_value=100)
    # "complete" is reached by labelling, never set by hand.
    status = enum_field([Comparison.Status.OPEN, Comparison.Status.RETIRED])
    gold_choice = serializers.CharField(allow_blank=True, help_text=GOLD_HELP)

    def validate_gold_choice(self, value: str) -> str:
        return _check_choice(value)

    def validate(self, attrs: dict) -> dict:
        """Refuse a change that would leave the comparison in a state nothing ever
        leaves: open with all its labels (never served, never completed), a
        complete one reopened (its aggregates and completion stay)."""
        c = self.instance
        status = attrs.get("status", c.status)
        required = attrs.get("labels_required", c.labels_required)
        if c.status == Comparison.Status.COMPLETE and status == Comparison.Status.OPEN:
            raise serializers.ValidationError(
                {"status": ["A complete comparison cannot be reopened."]}
            )
        if status == Comparison.Status.OPEN and required <= c.labels_count:
            raise serializers.ValidationError(
                {
                    "labels_required": [
                        f"Must be more than the {c.labels_count} labels this open "
                        "comparison already has (retire it to stop labelling)."
                    ]
                }
            )
        # The gold answer's rules (a gold item keeps one; none on a plain one)
        # are the gold service's, checked under the row lock: one rule.
        return attrs

    class Meta:
        model = Comparison
        fields = ["priority", "labels_required", "status", "gold_choice"]


class LabelSerializer(serializers.ModelSerializer):
    """A stored label, choice in canonical terms (A = response_a)."""

    choice = enum_field(Choice.values, read_only=True)
    # A plain string, as gold_choice: the schema already names this value set.
    displayed_choice = serializers.CharField(
        read_only=True,
        help_text="a, b, tie or both_bad as the annotator saw it (a = the left-hand "
        "response), "
        "the letters its rationale uses; choice is canonical (a = response_a), the "
        "two differ when shown_swapped.",
    )
    review_state = enum_field(Label.ReviewState.values, read_only=True)

    class Meta:
        model = Label
        fields = [
            "id",
            "comparison",
            "annotator",
            "assignment",
            "choice",
            "displayed_choice",
            "strength",
            "p_a",
            "rationale",
            "duration_ms",
            "shown_swapped",
            "source",
            "review_state",
            "review_note",
            "reviewed_by",
            "reviewed_at",
            "created_at",
            "edited_at",
        ]
        read_only_fields = fields


class AssignmentSerializer(serializers.ModelSerializer):
    state = enum_field(Assignment.State.values, read_only=True)

    class Meta:
        model = Assignment
        fields = [
            "id",
            "comparison",
            "project",
            "state",
            "swapped",
            "leased_at",
            "expires_at",
            "finished_at",
            "skip_reason",
        ]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    status = enum_field(ModelVersion.Status.values, read_only=True)
    kind = enum_field(ModelVersion.Kind.values, read_only=True)

    class Meta:
        model = ModelVersion
        fields = "__all__"


class RoundSerializer(serializers.ModelSerializer):
    status = enum_field(Round.Status.values, read_only=True)

    class Meta:
        model = Round
        fields = "__all__"


class JobSerializer(serializers.ModelSerializer):
    status = enum_field(Job.Status.values, read_only=True)
    kind = enum_field(Job.Kind.values, read_only=True)

    class Meta:
        model = Job
        fields = "__all__"


class ProgressSerializer(serializers.Serializer):
    done_today = serializers.IntegerField()
    done_total = serializers.IntegerField()
    remaining = serializers.IntegerField()


class MembershipSerializer(serializers.ModelSerializer):
    project_name = serializers.CharField(source="project.name")
    role = enum_field(Membership.Role.values)

    class Meta:
        model = Membership
        fields = ["project", "project_name", "role", "paused"]


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    memberships = MembershipSerializer(many=True)
