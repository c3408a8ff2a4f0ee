"""API for ranking mode: read an item as you are shown it, rank it, skip it, mark
it gold (admins); list and review rankings (reviewers). The next item to rank is
``POST projects/<id>/ranking-next/`` (labelapp.api.views). No business logic here: the
queue (labelapp.queue.rankings), the services and ``access`` decide."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse

from labelapp import access, models
from labelapp.api import serializers as s
from labelapp.api.views import (
    _choice_param,
    _enum_param,
    _filter_ints,
    _int_params,
    _Scoped,
    path_id,
)
from labelapp.errors import NotFound, PermissionDenied
from labelapp.models import RankingItem
from labelapp.queue.rankings import ranking_item_skip
from labelapp.selectors.rankings import (
    ITEM_NOT_FOUND,
    ranking_display_order,
    ranking_item_for,
    ranking_item_payload,
    rankings_for,
    tiers_to_display,
)
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.rankings import ranking_rank
from labelapp.services.reviews import ranking_review

REVIEW_STATES = models.Label.ReviewState.values


class RankingItemViewSet(viewsets.ViewSet):
    """Ranking items: read one as you are shown it, rank it, skip it. Members of
    its project (and staff) see it; members rank and skip it (staff who are not
    members do not); admins mark it gold."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [IsAuthenticated]

    def _item(self, request: Request, pk: str | None) -> RankingItem:
        return ranking_item_for(user=request.user, item_id=path_id(pk, ITEM_NOT_FOUND))

    def _annotating(self, request: Request, pk: str | None) -> RankingItem:
        item = self._item(request, pk)
        paused = access.annotation_paused(user=request.user, project=item.project_id)
        if paused is None:
            raise NotFound(ITEM_NOT_FOUND)  # staff who are not members do not rank
        if paused:
            raise PermissionDenied("Your membership of this project is paused.")
        return item

    @extend_schema(responses=s.RankingItemSerializer, summary="A ranking item")
    def retrieve(self, request: Request, pk: str | None = None) -> HttpResponse:
        item = self._item(request, pk)
        payload = ranking_item_payload(item=item, user=request.user)
        return HttpResponse(s.RankingItemSerializer(payload).data)

    @extend_schema(
        request=s.RankInputSerializer,
        responses={
            201: s.RankingSerializer,
            200: OpenApiResponse(
                s.RankingSerializer, description="Your earlier ranking, replaced."
            ),
            409: OpenApiResponse(
                description="No slot left for you, or your ranking was reviewed."
            ),
        },
        summary="Rank the item's responses (tiers of display indexes, best first)",
    )
    @action(detail=True, methods=["post"])
    def rank(self, request: Request, pk: str | None = None) -> HttpResponse:
        item = self._annotating(request, pk)
        data = s.RankInputSerializer(
            data=request.data, context={"k": len(item.response_ids)}
        )
        data.is_valid(raise_exception=True)
        ranking, created = ranking_rank(
            item_id=item.pk, annotator=request.user, **data.validated_data
        )
        order = ranking_display_order(item=item, annotator_id=request.user.pk)
        body = {
            "id": ranking.pk,
            "item": item.pk,
            "tiers": tiers_to_display(ranking.tiers, order),
            "duration_ms": ranking.duration_ms,
            "created_at": ranking.created_at,
            "updated_at": ranking.updated_at,
        }
        return HttpResponse(
            s.RankingSerializer(body).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        request=s.SkipInputSerializer,
        responses={
            200: s.RankingSkipSerializer,
            409: OpenApiResponse(description="You have ranked it."),
        },
        summary="Give the item back (its slot is free at once; never served to "
        "you again)",
    )
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk: str | None = None) -> HttpResponse:
        item = self._annotating(request, pk)
        data = s.SkipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lease = ranking_item_skip(
            item_id=item.pk, annotator=request.user, **data.validated_data
        )
        body = {"item": item.pk, "state": lease.state, "skip_reason": lease.skip_reason}
        return HttpResponse(s.RankingSkipSerializer(body).data)

    @extend_schema(
        request=s.RankingGoldInputSerializer,
        responses=s.RankingItemGoldSerializer,
        summary="Mark the item gold with its known order, or unmark it (admins)",
    )
    @action(detail=True, methods=["post"])
    def gold(self, request: Request, pk: str | None = None) -> HttpResponse:
        item = self._item(request, pk)
        data = s.RankingGoldInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        item = ranking_item_mark_gold(
            item=item, tiers=data.validated_data["tiers"], by=request.user
        )
        return HttpResponse(s.RankingItemGoldSerializer(item).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            *_int_params("project", "item", "annotator"),
            _enum_param("review_state", REVIEW_STATES),
        ]
    )
)
class RankingViewSet(_Scoped, viewsets.ReadOnlyModelViewSet):
    """Rankings, for the reviewers of their project (staff: all); a ranking is
    reviewed as a whole, which reviews every label it implies."""

    model = models.Ranking
    serializer_class = s.RankingReviewSerializer
    permission_classes = [IsAuthenticated]

    def scoped_queryset(self) -> QuerySet:
        request = self.request
        qs = _filter_ints(
            request,
            rankings_for(request.user),
            {
                "project": "item__project_id",
                "item": "item_id",
                "annotator": "annotator_id",
            },
        )
        if value := _choice_param(request, "review_state", REVIEW_STATES):
            qs = qs.filter(review_state=value)
        return qs

    @extend_schema(
        request=s.ReviewInputSerializer,
        responses=s.RankingReviewSerializer,
        summary="Accept or reject a ranking and every label it implies (reviewers)",
    )
    @action(detail=True, methods=["post"])
    def review(self, request: Request, pk: str | None = None) -> HttpResponse:
        ranking = self.get_object()
        data = s.ReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ranking = ranking_review(
            ranking=ranking, reviewer=request.user, **data.validated_data
        )
        return HttpResponse(s.RankingReviewSerializer(ranking).data)
