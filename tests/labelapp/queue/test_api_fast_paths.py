"""The annotation hot path's shortcuts give what the slow, general path gives:
plain-function bodies vs the serializers (which stay the API contract and the schema's
source), the token-row cache vs a fresh lookup, coalesced trigger checks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError

from labelapp import selectors
from labelapp.api import authentication
from labelapp.api import serializers as s
from labelapp.models import Choice
from labelapp.queue import comparison_next_for, label_submit

from ..conftest import make_comparisons, make_user

LABEL_INPUTS = [
    {"choice": "a", "strength": 2},
    {"choice": "b", "strength": 4, "rationale": "ok", "duration_ms": 5},
    {"choice": "tie", "strength": 1, "duration_ms": None, "idempotency_key": "k"},
    {"choice": "both_bad", "strength": 3, "unknown": [1, 2]},
    {"choice": "a", "strength": 1, "rationale": "", "idempotency_key": ""},
    {"choice": "a", "strength": 2, "rationale": "x" * s.RATIONALE_MAX_CHARS},
    {"choice": "a", "strength": 2, "duration_ms": s.MAX_DURATION_MS},
    # Inputs the serializer coerces or refuses: the fast path must hand them over.
    {"choice": "a", "strength": 2, "rationale": "  trimmed  "},
    {"choice": "a", "strength": "2"},
    {"choice": "a", "strength": 2.0},
    {"choice": "a", "strength": 2, "idempotency_key": 7},
    {"choice": "a", "strength": 2, "rationale": "caf\u00e9"},
    {"choice": "a", "strength": True},
    {"choice": "a", "strength": 5},
    {"choice": "a", "strength": 0},
    {"choice": "A", "strength": 2},
    {"choice": ["a"], "strength": 2},
    {"strength": 2},
    {"choice": "a"},
    {"choice": "a", "strength": 2, "duration_ms": -1},
    {"choice": "a", "strength": 2, "duration_ms": s.MAX_DURATION_MS + 1},
    {"choice": "a", "strength": 2, "duration_ms": False},
    {"choice": "a", "strength": 2, "rationale": "x" * (s.RATIONALE_MAX_CHARS + 1)},
    {"choice": "a", "strength": 2, "rationale": "nul\x00"},
    {"choice": "a", "strength": 2, "rationale": None},
    {"choice": "a", "strength": 2, "idempotency_key": "k" * 101},
    # Rules met after coercion, several problems in one field, every text rule.
    {"choice": "a", "strength": "9"},
    {"choice": "a", "strength": 2, "duration_ms": "5"},
    {"choice": "a", "strength": 2, "rationale": "x" * 10_001 + "\x00"},
    {"choice": "a", "strength": 2, "rationale": "lone \ud800 surrogate"},
    {"choice": "a", "strength": 2, "idempotency_key": "k\x00"},
    {"choice": "left", "strength": 9, "duration_ms": -5},
    [],
    "a",
    None,
]


def _slow(data: object) -> tuple[str, object]:
    serializer = s.LabelInputSerializer(data=data)
    if serializer.is_valid():
        return "ok", dict(serializer.validated_data)
    return "error", serializer.errors


def _fast(data: object) -> tuple[str, object]:
    try:
        return "ok", s.label_input(data)
    except ValidationError as exc:
        return "error", exc.detail


# Strength is optional for tie and both bad (issue 15, item 7), still required for
# a and b: inputs the old field-level rule would have refused.
STRENGTH_OPTIONAL_INPUTS = [
    {"choice": "tie"},
    {"choice": "both_bad", "strength": None, "rationale": "neither"},
    {"choice": "a", "strength": None},
    {"choice": "b"},
    {"choice": "tie", "strength": 9},
]


@pytest.mark.parametrize("data", LABEL_INPUTS + STRENGTH_OPTIONAL_INPUTS)
def test_label_input_matches_the_serializer(data):
    assert _fast(data) == _slow(data)


class _DRFRulesLabelInput(serializers.Serializer):
    """LabelInputSerializer as it was, with DRF's own validators: the contract the
    service's validator (labelapp.queue.label_input) must answer exactly as."""

    choice = serializers.ChoiceField(choices=Choice.values)
    strength = serializers.IntegerField(min_value=1, max_value=4)
    rationale = serializers.CharField(
        max_length=s.RATIONALE_MAX_CHARS, required=False, allow_blank=True, default=""
    )
    duration_ms = serializers.IntegerField(
        min_value=0, max_value=s.MAX_DURATION_MS, required=False, allow_null=True
    )
    idempotency_key = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )


@pytest.mark.parametrize("data", LABEL_INPUTS)
def test_the_service_s_rules_answer_as_drf_s_validators_did(data):
    reference = _DRFRulesLabelInput(data=data)
    expected = (
        ("ok", dict(reference.validated_data))
        if reference.is_valid()
        else ("error", reference.errors)
    )
    got = _slow(data)
    assert got == expected
    if got[0] == "error":  # the codes too (ErrorDetail compares them)
        assert {k: [e.code for e in v] for k, v in got[1].items()} == {
            k: [e.code for e in v] for k, v in expected[1].items()
        }


@pytest.mark.django_db
def test_next_and_submitted_label_bodies_match_the_serializers(project):
    make_comparisons(project, 2)
    user = make_user(project=project)
    for swapped_seed in range(2):  # seeds 0 and 1: both orientations
        assignment = comparison_next_for(
            annotator=user, project=project, rng=random.Random(swapped_seed)
        )
        payload = selectors.assignment_payload(assignment)
        assert s.next_data(payload) == s.NextSerializer(payload).data
        label, _ = label_submit(
            assignment_id=assignment.pk,
            annotator=user,
            choice="a" if swapped_seed else "tie",
            strength=3,
            rationale="why",
            duration_ms=1200,
            idempotency_key=f"k{swapped_seed}",
        )
        assert s.submitted_label_data(label) == s.SubmittedLabelSerializer(label).data
        stored, created = label_submit(
            assignment_id=assignment.pk,
            annotator=user,
            choice="a" if swapped_seed else "tie",
            strength=3,
            idempotency_key=f"k{swapped_seed}",
        )
        assert not created
        assert s.submitted_label_data(stored) == s.submitted_label_data(label)


def test_datetimes_render_as_the_serializer_renders_them():
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payload = {
        "assignment_id": 1,
        "comparison_id": 2,
        "prompt": {"messages": [{"role": "user", "content": "q"}]},
        "a": {"response_id": 3, "text": "x"},
        "b": {"response_id": 4, "text": "y"},
        "lease_expires_at": when,
    }
    assert s.next_data(payload) == s.NextSerializer(payload).data
    assert s.next_data(payload)["lease_expires_at"] == "2026-01-02T03:04:05.678901Z"


@pytest.mark.django_db
def test_token_rows_are_cached_for_a_few_seconds(
    settings, monkeypatch, django_assert_num_queries
):
    settings.API_TOKEN_CACHE_SECONDS = 5
    clock = [1000.0]
    monkeypatch.setattr(authentication.time, "monotonic", lambda: clock[0])
    user = make_user("cached")
    token = Token.objects.create(user=user)
    auth = authentication.TokenAuthentication()
    with django_assert_num_queries(1):
        first, _ = auth.authenticate_credentials(token.key)
    with django_assert_num_queries(0):
        again, again_token = auth.authenticate_credentials(token.key)
    # A fresh instance each time: one request's changes never leak into another's.
    assert again == first and again is not first and again_token.user is again
    clock[0] += 5
    with django_assert_num_queries(1):
        auth.authenticate_credentials(token.key)


@pytest.mark.django_db
def test_revoking_in_this_process_takes_effect_at_once(settings):
    settings.API_TOKEN_CACHE_SECONDS = 3600
    user = make_user("revoked")
    token = Token.objects.create(user=user)
    auth = authentication.TokenAuthentication()
    auth.authenticate_credentials(token.key)
    user.is_active = False
    user.save()
    with pytest.raises(Exception, match="inactive"):
        auth.authenticate_credentials(token.key)
    key = token.key
    token.delete()
    with pytest.raises(Exception, match="Invalid token"):
        auth.authenticate_credentials(key)


@pytest.mark.django_db
def test_cache_off_looks_up_every_time(settings, django_assert_num_queries):
    settings.API_TOKEN_CACHE_SECONDS = 0
    token = Token.objects.create(user=make_user("uncached"))
    auth = authentication.TokenAuthentication()
    for _ in range(2):
        with django_assert_num_queries(1):
            auth.authenticate_credentials(token.key)
