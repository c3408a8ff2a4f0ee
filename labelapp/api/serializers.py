"""Serializers: shape and validate; the writes themselves are services
(labelapp/services/, queue.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ParseError

from labelapp import access
from labelapp.api.parsers import MAX_DEPTH as MAX_JSON_DEPTH
from labelapp.api.parsers import check_value
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
from labelapp.queue import (
    MAX_DURATION_MS,
    MAX_IDEMPOTENCY_KEY,
    RATIONALE_MAX_CHARS,
    STRENGTH_MAX,
    STRENGTH_MIN,
    display_choice,
    label_input_problem,
    label_input_problems,
)
from labelapp.services.projects import (
    PROJECT_BOUNDS,
    SAMPLER_BACKENDS,
    pair_mix_problems,
    policy_config_problems,
    project_settings_problems,
    rm_config_problems,
    top_p_problems,
)
from labelapp.services.rankings import display_tiers_problem
from labelapp.services.reviews import REVIEW_NOTE_MAX_CHARS
from training.rankings import MAX_RESPONSES


def enum_field(values: list[str], **kwargs) -> serializers.ChoiceField:
    """A choice field documented as an inline enum. Several models share field names
    (status, origin, kind, choice) with different value sets; inline enums keep the
    schema free of drf-spectacular's enum-name collisions without settings overrides.
    """
    values = list(values)
    shown = [*values, ""] if kwargs.get("allow_blank") else values
    schema: dict = {"type": "string", "enum": shown}
    if kwargs.get("allow_null"):
        schema["nullable"] = True
    field_cls = extend_schema_field(schema)(
        type("EnumField", (serializers.ChoiceField,), {})
    )
    return field_cls(choices=values, **kwargs)


GOLD_HELP = "For gold items: a, b or tie (canonical terms); else empty."
MAJORITY_HELP = "a, b, tie or both_bad; empty while there is no unique majority."


def _check_choice(value: str) -> str:
    if value and value not in Choice.values:
        raise serializers.ValidationError(
            f"Must be one of: {', '.join(Choice.values)}."
        )
    return value


class AdministeredProjectField(serializers.PrimaryKeyRelatedField):
    """A project the requesting user administers; others are "does not exist"."""

    def get_queryset(self):
        return access.administered_projects(user=self.context["request"].user)


# --- project settings: every database CHECK and every training config, as a 400 ----

# The rules live in the project service (labelapp.services.projects), which the
# project settings page asks too: one validator. These wrap them as DRF validators.


def validate_rm_config(value: object) -> dict:
    if problems := rm_config_problems(value):
        raise serializers.ValidationError(problems)
    return value


def validate_policy_config(value: object) -> dict:
    if problems := policy_config_problems(value):
        raise serializers.ValidationError(problems)
    return value


def validate_pair_mix(value: object) -> dict:
    if problems := pair_mix_problems(value):
        raise serializers.ValidationError(problems)
    return value


class SafeJSONField(serializers.JSONField):
    """DRF's JSONField, but a form-encoded value nested too deep, or a NUL anywhere
    in it, is this field's 400 (the JSON body parser checks its own input the same
    way; a form field's JSON is parsed here)."""

    def to_internal_value(self, data):
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            raise serializers.ValidationError(
                f"JSON nested deeper than {MAX_JSON_DEPTH} levels."
            ) from None
        try:
            return check_value(value)
        except ParseError as exc:
            raise serializers.ValidationError(str(exc.detail)) from None


# The bounds of the database's CHECK constraints and column types (the service's
# table), so input the database would refuse is a field-level 400.
_CHECKED = {field: dict(bounds) for field, bounds in PROJECT_BOUNDS.items()}


class ProjectSerializer(serializers.ModelSerializer):
    pair_mix = SafeJSONField(
        required=False,
        validators=[validate_pair_mix],
        help_text="Share of proposed pairs per strategy (best_vs_runner_up, "
        "best_vs_random, closest, random); weights >= 0, not all 0.",
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


# --- annotation flow -------------------------------------------------------------


class _PromptPayload(serializers.Serializer):
    messages = MessageSerializer(many=True)


class _SidePayload(serializers.Serializer):
    response_id = serializers.IntegerField()
    text = serializers.CharField()


class NextSerializer(serializers.Serializer):
    """A leased comparison as shown: a is on the left, b on the right."""

    assignment_id = serializers.IntegerField()
    comparison_id = serializers.IntegerField()
    prompt = _PromptPayload()
    a = _SidePayload()
    b = _SidePayload()
    lease_expires_at = serializers.DateTimeField()


class _LimitsForTheSchema:
    """A field whose limits (min_value, max_value, max_length) are declared for the
    schema only: the service's validator (labelapp.queue.label_input) enforces
    them, reported through LabelInputSerializer's validate_<field> methods."""

    def run_validators(self, value: object) -> None:
        return None


class _SchemaInteger(_LimitsForTheSchema, serializers.IntegerField):
    pass


class _SchemaText(_LimitsForTheSchema, serializers.CharField):
    pass


def _service_check(field: str) -> object:
    def validate(self: serializers.Serializer, value: object) -> object:
        problems = label_input_problem(field, value)
        if problems:
            raise serializers.ValidationError(
                [ErrorDetail(p.message, code=p.code) for p in problems]
            )
        return value

    validate.__name__ = f"validate_{field}"
    return validate


# Coerces the body's types and documents the schema; the rules are the service's
# (labelapp.queue.label_input), reported as field errors. (A comment, not a
# docstring: drf-spectacular would publish a docstring in the schema.)
class LabelInputSerializer(serializers.Serializer):
    choice = enum_field(Choice.values, help_text="Display terms.")
    strength = _SchemaInteger(
        min_value=STRENGTH_MIN,
        max_value=STRENGTH_MAX,
        required=False,
        allow_null=True,
        default=None,
        help_text="Required for a and b; tie and both_bad have none (one sent "
        "with them is dropped: stored as null).",
    )
    rationale = _SchemaText(
        max_length=RATIONALE_MAX_CHARS, required=False, allow_blank=True, default=""
    )
    duration_ms = _SchemaInteger(
        min_value=0, max_value=MAX_DURATION_MS, required=False, allow_null=True
    )
    idempotency_key = _SchemaText(
        max_length=MAX_IDEMPOTENCY_KEY, required=False, allow_blank=True, default=""
    )

    validate_choice = _service_check("choice")
    validate_strength = _service_check("strength")
    validate_rationale = _service_check("rationale")
    validate_duration_ms = _service_check("duration_ms")
    validate_idempotency_key = _service_check("idempotency_key")

    def validate(self, attrs: dict) -> dict:
        # The one rule across fields (a and b need a strength), the service's too.
        problems = label_input_problems(
            {"choice": attrs.get("choice"), "strength": attrs.get("strength")}
        )
        if "strength" in problems:
            raise serializers.ValidationError(
                {
                    "strength": [
                        ErrorDetail(p.message, code=p.code)
                        for p in problems["strength"]
                    ]
                }
            )
        return attrs


class SubmittedLabelSerializer(serializers.Serializer):
    """The stored label as the annotator submitted it (choice in display terms), so a
    repeated submission gets byte-for-byte the same body."""

    id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    comparison_id = serializers.IntegerField()
    choice = enum_field(Choice.values)
    strength = serializers.IntegerField(allow_null=True)
    rationale = serializers.CharField(allow_blank=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    idempotency_key = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()

    def to_representation(self, label: Label) -> dict:
        return super().to_representation(_submitted_label_values(label))


class ReviewInputSerializer(serializers.Serializer):
    state = enum_field([Label.ReviewState.ACCEPTED, Label.ReviewState.REJECTED])
    note = serializers.CharField(
        max_length=REVIEW_NOTE_MAX_CHARS, required=False, allow_blank=True, default=""
    )


# --- ranking mode ------------------------------------------------------------------


class _RankingResponsePayload(serializers.Serializer):
    index = serializers.IntegerField(help_text="What `tiers` call this response.")
    response_id = serializers.IntegerField()
    text = serializers.CharField()


_TIERS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_RESPONSES,
    "items": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_RESPONSES,
        "items": {"type": "integer", "minimum": 0, "maximum": MAX_RESPONSES - 1},
    },
    "description": "Best first: each tier a list of response indexes (`index` "
    "as shown to you); several in one tier are a tie; indexes left out are "
    "unranked (a top-k ranking), below every ranked one.",
}


@extend_schema_field(_TIERS_SCHEMA)
class TiersField(SafeJSONField):
    """The tiers as JSON (a form field's too); the rules are the service's
    (labelapp.services.rankings.display_tiers_problem), given the item's K in the
    serializer's context."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if problem := display_tiers_problem(value, self.context["k"]):
            raise serializers.ValidationError(problem)
        return value


class RankingItemSerializer(serializers.Serializer):
    """A ranking item as shown to you: responses in your display order."""

    id = serializers.IntegerField()
    project = serializers.IntegerField()
    prompt = _PromptPayload()
    responses = _RankingResponsePayload(many=True)
    your_tiers = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        allow_null=True,
        help_text="Your ranking of it (display indexes), null if you have none.",
    )


class RankInputSerializer(serializers.Serializer):
    tiers = TiersField()
    duration_ms = serializers.IntegerField(
        min_value=0, max_value=MAX_DURATION_MS, required=False, allow_null=True
    )


class RankingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField()
    tiers = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="As you sent them (display indexes).",
    )
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


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


# --- the annotation hot path, without serializer instances -------------------------
#
# ``next`` and ``label`` run twice per label at hundreds of labels/s. A DRF serializer
# instance deep-copies its declared fields on first use (~0.5 ms per request for the
# three above), so these two endpoints build their bodies with the plain functions
# below. The serializer classes stay the contract: the OpenAPI schema is generated
# from them, anything unusual in the input is handed to them (their error bodies and
# coercions), and tests/labelapp/queue/test_api_fast_paths.py checks that both paths give
# the same output.

_DATETIME = serializers.DateTimeField()  # to_representation only: no per-call copy
_LABEL_INPUT_KEYS = frozenset(
    ("choice", "strength", "rationale", "duration_ms", "idempotency_key")
)


def next_data(payload: dict) -> dict:
    """NextSerializer(payload).data, built directly."""
    a, b = payload["a"], payload["b"]
    return {
        "assignment_id": payload["assignment_id"],
        "comparison_id": payload["comparison_id"],
        "prompt": {
            "messages": [
                {"role": m["role"], "content": m["content"]}
                for m in payload["prompt"]["messages"]
            ]
        },
        "a": {"response_id": a["response_id"], "text": a["text"]},
        "b": {"response_id": b["response_id"], "text": b["text"]},
        "lease_expires_at": _DATETIME.to_representation(payload["lease_expires_at"]),
    }


def _submitted_label_values(label: Label) -> dict:
    """A stored label in display terms (the annotator's left/right)."""
    return {
        "id": label.pk,
        "assignment_id": label.assignment_id,
        "comparison_id": label.comparison_id,
        "choice": display_choice(label.choice, label.shown_swapped),
        "strength": label.strength,
        "rationale": label.rationale,
        "duration_ms": label.duration_ms,
        "idempotency_key": label.idempotency_key,
        "created_at": label.created_at,
    }


def submitted_label_data(label: Label) -> dict:
    """SubmittedLabelSerializer(label).data, built directly (the hot path skips
    the serializer's field machinery; only the timestamp needs formatting)."""
    values = _submitted_label_values(label)
    values["created_at"] = _DATETIME.to_representation(label.created_at)
    return values


def _plain_text(value: object) -> bool:
    """A string DRF's CharField would take unchanged: no surrounding whitespace to
    trim, no NUL (ASCII only: other text takes the full path, which also rejects
    lone surrogates)."""
    return (
        type(value) is str
        and value.isascii()
        and "\x00" not in value
        and value == value.strip()
    )


def plain_label_input(data: object) -> dict | None:
    """LabelInputSerializer's validated_data for a well-formed JSON body (what every
    client sends): the types need no coercion and the service's validator finds
    nothing; None for anything else (the serializer coerces it or reports the
    validator's problems)."""
    if not (
        type(data) is dict
        and type(data.get("choice")) is str
        and (data.get("strength") is None or type(data["strength"]) is int)
        and _plain_text(data.get("rationale", ""))
        and (data.get("duration_ms") is None or type(data["duration_ms"]) is int)
        and _plain_text(data.get("idempotency_key", ""))
    ):
        return None
    validated = {k: v for k, v in data.items() if k in _LABEL_INPUT_KEYS}
    validated.setdefault("strength", None)
    validated.setdefault("rationale", "")
    validated.setdefault("idempotency_key", "")
    if label_input_problems(validated):
        return None
    return validated


def label_input(data: object) -> dict:
    """LabelInputSerializer(data=data).validated_data. A well-formed JSON body is
    checked by hand (plain_label_input); anything else (a form body, strings for
    numbers, text to trim, an invalid value) goes through the serializer, which
    coerces it or raises its 400 with field-level errors."""
    validated = plain_label_input(data)
    if validated is not None:
        return validated
    serializer = LabelInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
