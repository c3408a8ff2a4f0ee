"""The annotation hot path without serializer instances (next and label bodies)."""

from __future__ import annotations

from rest_framework import serializers

from labelapp.api.serializers.annotation import (
    LabelInputSerializer,
    _submitted_label_values,
)
from labelapp.models import (
    Label,
)
from labelapp.queue import (
    label_input_problems,
)

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
