"""API for labels: read them (selectors.labels_for), review them (reviewers,
services.reviews), and undo or edit one's own (labelapp.queue.undo)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse

from labelapp import models, selectors
from labelapp.api import serializers as s
from labelapp.api.views import (
    _choice_param,
    _enum_param,
    _filter_ints,
    _int_params,
    _Scoped,
)
from labelapp.queue import label_edit, label_undo
from labelapp.services.reviews import label_review


@extend_schema_view(
    list=extend_schema(
        parameters=[
            *_int_params("project", "comparison", "annotator"),
            _enum_param("review_state", ["pending", "accepted", "rejected"]),
        ]
    )
)
class LabelViewSet(_Scoped, viewsets.ReadOnlyModelViewSet):
    model = models.Label
    """Labels are written through assignments (annotators) and reviews (reviewers)."""

    serializer_class = s.LabelSerializer

    def scoped_queryset(self) -> QuerySet:
        request = self.request
        qs = selectors.labels_for(request.user)
        qs = _filter_ints(
            request,
            qs,
            {
                "project": "comparison__project_id",
                "comparison": "comparison_id",
                "annotator": "annotator_id",
            },
        )
        states = ["pending", "accepted", "rejected"]
        if value := _choice_param(request, "review_state", states):
            qs = qs.filter(review_state=value)
        return qs

    @extend_schema(request=s.ReviewInputSerializer, responses=s.LabelSerializer)
    @action(detail=True, methods=["post"])
    def review(self, request: Request, pk: str | None = None) -> HttpResponse:
        label = self.get_object()
        data = s.ReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = label_review(label=label, reviewer=request.user, **data.validated_data)
        return HttpResponse(s.LabelSerializer(label).data)

    @extend_schema(
        request=None,
        responses=s.AssignmentSerializer,
        summary="Undo your own label (unreviewed, within the project's "
        "undo_grace_seconds); its comparison is leased back to you",
    )
    @action(detail=True, methods=["post"])
    def undo(self, request: Request, pk: str | None = None) -> HttpResponse:
        label = self.get_object()
        assignment = label_undo(label_id=label.pk, annotator=request.user)
        return HttpResponse(s.AssignmentSerializer(assignment).data)

    @extend_schema(
        request=s.LabelEditInputSerializer,
        responses=s.LabelSerializer,
        summary="Edit your own label (choice in display terms; unreviewed, within "
        "the project's undo_grace_seconds)",
    )
    @action(detail=True, methods=["post"])
    def edit(self, request: Request, pk: str | None = None) -> HttpResponse:
        label = self.get_object()
        data = s.LabelEditInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = label_edit(
            label_id=label.pk, annotator=request.user, **data.validated_data
        )
        return HttpResponse(s.LabelSerializer(label).data)
