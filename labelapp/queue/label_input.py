"""The one validator of label input. label_submit runs it; the API's
LabelInputSerializer only coerces types (and documents these limits in the schema)
and reports this validator's problems as its field errors; the hot paths' plain
input check (labelapp.api.serializers.plain_label_input) accepts a body only when
this validator finds nothing.

The messages and codes are the API's field errors (its contract: they are what DRF's
own validators said for these limits, pinned by
tests/labelapp/queue/test_api_fast_paths.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from labelapp.models import Choice

RATIONALE_MAX_CHARS = 10_000
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
MAX_IDEMPOTENCY_KEY = 100
STRENGTH_MIN, STRENGTH_MAX = 1, 4


class Problem(NamedTuple):
    code: str
    message: str


Check = Callable[[object], list[Problem]]


def _int_in(low: int, high: int) -> Check:
    def check(value: object) -> list[Problem]:
        if type(value) is not int:
            return [Problem("invalid", "A valid integer is required.")]
        if value > high:
            return [
                Problem(
                    "max_value", f"Ensure this value is less than or equal to {high}."
                )
            ]
        if value < low:
            return [
                Problem(
                    "min_value", f"Ensure this value is greater than or equal to {low}."
                )
            ]
        return []

    return check


def _text_of_at_most(limit: int) -> Check:
    def check(value: object) -> list[Problem]:
        if type(value) is not str:
            return [Problem("invalid", "Not a valid string.")]
        problems = []
        if len(value) > limit:
            problems.append(
                Problem(
                    "max_length",
                    f"Ensure this field has no more than {limit} characters.",
                )
            )
        if "\x00" in value:
            problems.append(
                Problem(
                    "null_characters_not_allowed", "Null characters are not allowed."
                )
            )
        # The first lone surrogate (not encodable as UTF-8 for PostgreSQL).
        for ch in value:
            if 0xD800 <= ord(ch) <= 0xDFFF:
                problems.append(
                    Problem(
                        "surrogate_characters_not_allowed",
                        f"Surrogate characters are not allowed: U+{ord(ch):X}.",
                    )
                )
                break
        return problems

    return check


def _choice(value: object) -> list[Problem]:
    if type(value) is str and value in Choice.values:
        return []
    return [Problem("invalid_choice", f'"{value}" is not a valid choice.')]


_duration = _int_in(0, MAX_DURATION_MS)
_strength = _int_in(STRENGTH_MIN, STRENGTH_MAX)

# Strength grades a preference; a tie or "both bad" prefers neither response, so
# nobody is asked for one and it is stored as null (labelapp.queue.label drops a
# strength sent with them: clients written before this rule send 1 there).
STRENGTH_CHOICES = frozenset({Choice.A.value, Choice.B.value})
# DRF's own words, as when the field itself was required (the API's contract).
STRENGTH_REQUIRED = Problem("required", "This field is required.")

CHECKS: dict[str, Check] = {
    "choice": _choice,
    "strength": lambda value: [] if value is None else _strength(value),
    "rationale": _text_of_at_most(RATIONALE_MAX_CHARS),
    "duration_ms": lambda value: [] if value is None else _duration(value),
    "idempotency_key": _text_of_at_most(MAX_IDEMPOTENCY_KEY),
}


def label_input_problem(field: str, value: object) -> list[Problem]:
    """What is wrong with one field's value (already of its type); [] if nothing."""
    return CHECKS[field](value)


def label_input_problems(values: Mapping[str, object]) -> dict[str, list[Problem]]:
    """Field -> its problems, for the fields present in ``values``."""
    problems = {}
    for field, check in CHECKS.items():
        if field in values and (found := check(values[field])):
            problems[field] = found
    if (
        values.get("choice") in STRENGTH_CHOICES
        and values.get("strength") is None
        and "strength" not in problems
    ):
        problems["strength"] = [STRENGTH_REQUIRED]
    return problems
