"""API for label discussion notes (issue 18 item 6). Who sees a thread is
``access.can_see_label_notes`` (its queryset form: ``selectors.notes``); the write
is ``services.notes.label_note_add``. A label the user may not see is a 404."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse

from labelapp import models
from labelapp.api import serializers as s
from labelapp.api.views import _filter_ints, _Scoped
from labelapp.errors import NotFound
from labelapp.selectors.notes import label_notes_for
from labelapp.services.notes import label_note_add, label_notes_mark_read


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("label", OpenApiTypes.INT, description="One label's."),
            OpenApiParameter("project", OpenApiTypes.INT, description="One project's."),
            OpenApiParameter(
                "unread",
                OpenApiTypes.BOOL,
                description="1: only the unread notes on your own labels.",
            ),
        ]
    )
)
class LabelNoteViewSet(
    _Scoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    model = models.LabelNote
    serializer_class = s.LabelNoteSerializer

    def scoped_queryset(self) -> QuerySet:
        request = self.request
        qs = label_notes_for(request.user)
        qs = _filter_ints(
            request,
            qs,
            {"label": "label_id", "project": "label__comparison__project_id"},
        )
        if request.query_params.get("unread") in ("1", "true"):
            qs = qs.filter(label__annotator=request.user, read_at__isnull=True)
        return qs

    @extend_schema(
        request=s.LabelNoteInputSerializer,
        responses={
            201: s.LabelNoteSerializer,
            404: OpenApiResponse(
                description="No such label, or one whose notes you may not see"
            ),
        },
        summary="Add a note to a label's thread (its project's reviewers and "
        "admins, or the label's annotator)",
    )
    def create(self, request: Request) -> HttpResponse:
        data = s.LabelNoteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = (
            models.Label.objects.select_related("comparison")
            .filter(pk=data.validated_data["label"])
            .first()
        )
        if label is None:
            raise NotFound("Label not found.")
        note = label_note_add(
            label=label, author=request.user, body=data.validated_data["body"]
        )
        return HttpResponse(
            s.LabelNoteSerializer(note).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=s.LabelNotesReadSerializer,
        responses=s.MarkedSerializer,
        summary="Mark the notes on your own labels read (one project's, or all)",
    )
    @action(detail=False, methods=["post"])
    def read(self, request: Request) -> HttpResponse:
        data = s.LabelNotesReadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        marked = label_notes_mark_read(
            user=request.user, project=data.validated_data.get("project")
        )
        return HttpResponse({"marked": marked})
