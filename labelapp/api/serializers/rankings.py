"""Ranking mode's serializers: a K-way item, the tiers an annotator submits, a stored ranking."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labelapp.api.serializers.annotation import (
    _PromptPayload,
)
from labelapp.api.serializers.common import (
    SafeJSONField,
)
from labelapp.queue import (
    MAX_DURATION_MS,
)
from labelapp.services.rankings import display_tiers_problem
from training.rankings import MAX_RESPONSES

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
    lease_expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When your lease on it ends (ranking-next leases it to you); "
        "null without a live lease.",
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


class RankingSkipSerializer(serializers.Serializer):
    """Your lease on the item, given back."""

    item = serializers.IntegerField()
    state = serializers.CharField()
    skip_reason = serializers.CharField(allow_blank=True)


_GOLD_TIERS_SCHEMA = {
    "type": "array",
    "nullable": True,
    "items": {"type": "array", "items": {"type": "integer"}},
    "description": "The known order: tiers of response ids (not display "
    "indexes), best first; ties and a top-k order allowed. null: not gold.",
}


@extend_schema_field(_GOLD_TIERS_SCHEMA)
class GoldTiersField(SafeJSONField):
    """Response ids, checked by the service (labelapp.services.gold)."""


class RankingGoldInputSerializer(serializers.Serializer):
    tiers = GoldTiersField(allow_null=True)


class RankingItemGoldSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    is_gold = serializers.BooleanField()
    gold_tiers = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        allow_null=True,
    )


class RankingReviewSerializer(serializers.Serializer):
    """A ranking as reviewers see it: tiers of response ids, as stored."""

    id = serializers.IntegerField()
    item = serializers.IntegerField(source="item_id")
    project = serializers.IntegerField(source="item.project_id")
    annotator = serializers.IntegerField(source="annotator_id")
    tiers = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="Response ids, best first.",
    )
    source = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    review_state = serializers.CharField()
    review_note = serializers.CharField(allow_blank=True)
    reviewed_by = serializers.IntegerField(source="reviewed_by_id", allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
