"""The annotation flow's serializers: next, label input, the submitted label, review input."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from labelapp.api.serializers.common import (
    enum_field,
)
from labelapp.api.serializers.resources import (
    MessageSerializer,
)
from labelapp.models import (
    Choice,
    Label,
)
from labelapp.queue import (
    MAX_DURATION_MS,
    MAX_IDEMPOTENCY_KEY,
    RATIONALE_MAX_CHARS,
    SKIP_REASON_MAX_CHARS,
    STRENGTH_MAX,
    STRENGTH_MIN,
    display_choice,
    label_input_problem,
    label_input_problems,
)
from labelapp.services.reviews import REVIEW_NOTE_MAX_CHARS

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


class _AnswerInput(serializers.Serializer):
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

    validate_choice = _service_check("choice")
    validate_strength = _service_check("strength")
    validate_rationale = _service_check("rationale")

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


# Coerces the body's types and documents the schema; the rules are the service's
# (labelapp.queue.label_input), reported as field errors. (A comment, not a
# docstring: drf-spectacular would publish a docstring in the schema.)
class LabelInputSerializer(_AnswerInput):
    duration_ms = _SchemaInteger(
        min_value=0, max_value=MAX_DURATION_MS, required=False, allow_null=True
    )
    idempotency_key = _SchemaText(
        max_length=MAX_IDEMPOTENCY_KEY, required=False, allow_blank=True, default=""
    )

    validate_duration_ms = _service_check("duration_ms")
    validate_idempotency_key = _service_check("idempotency_key")


# Editing one's own label (labelapp.queue.label_edit): the answer, in display terms
# as on the compare page; the same rules as a new label.
class LabelEditInputSerializer(_AnswerInput):
    pass


class SkipInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=SKIP_REASON_MAX_CHARS,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why you skip (optional; shown to the project's admins).",
    )


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
