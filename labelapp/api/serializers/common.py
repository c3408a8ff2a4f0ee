"""Shared fields and validators: enums, canonical choices, project-settings rules (the service's), safe JSON."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ParseError

from labelapp import access
from labelapp.api.parsers import MAX_DEPTH as MAX_JSON_DEPTH
from labelapp.api.parsers import check_value
from labelapp.models import (
    Choice,
)
from labelapp.services.projects import (
    PROJECT_BOUNDS,
    pair_mix_problems,
    policy_config_problems,
    rm_config_problems,
    selection_strategy_problems,
)


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


def validate_selection_strategy(value: object) -> str | dict:
    if problems := selection_strategy_problems(value):
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
