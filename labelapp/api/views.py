"""API views: authenticate, pick the user's queryset (selectors), validate
(serializers), call a service, serialise. No business logic here."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labelapp import access, models, selectors
from labelapp.api import serializers as s
from labelapp.api.permissions import ProjectAdminWrites, StaffCreatesProjects
from labelapp.errors import NotFound, PermissionDenied
from labelapp.jobs import job_retry
from labelapp.loop.policy import policy_start
from labelapp.loop.triggers import (
    round_start,
    scoring_start,
    strategy_gain_start,
    training_start,
)
from labelapp.queue import (
    assignment_skip,
    comparison_next_for,
    label_submit,
)
from labelapp.queue.rankings import ranking_item_lease_for
from labelapp.selectors.rankings import ranking_item_payload
from labelapp.services.content import (
    comparison_create,
    comparison_update,
    prompt_create,
    response_create,
)
from labelapp.services.projects import project_create_by, project_update


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({name: ["A valid integer is required."]}) from None


def _choice_param(request: Request, name: str, choices: list[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if raw not in choices:
        raise ValidationError({name: [f"Must be one of: {', '.join(choices)}."]})
    return raw


def _filter_ints(request: Request, qs: QuerySet, fields: dict[str, str]) -> QuerySet:
    for param, field in fields.items():
        value = _int_param(request, param)
        if value is not None:
            qs = qs.filter(**{field: value})
    return qs


class _Scoped:
    """Routes only numeric ids (anything else is a 404 before the view runs), and
    gives schema generation, which has no user, an empty queryset to inspect."""

    lookup_value_regex = "[0-9]+"
    model: type

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()
        return self.scoped_queryset()

    def scoped_queryset(self) -> QuerySet:
        raise NotImplementedError


def _int_params(*names: str) -> list[OpenApiParameter]:
    return [
        OpenApiParameter(n, OpenApiTypes.INT, description=f"Filter by {n}.")
        for n in names
    ]


def _enum_param(name: str, choices: list[str]) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.STR, enum=choices)


class ProjectViewSet(_Scoped, viewsets.ModelViewSet):
    model = models.Project
    serializer_class = s.ProjectSerializer
    permission_classes = [IsAuthenticated, StaffCreatesProjects]

    def scoped_queryset(self) -> QuerySet:
        return selectors.projects_for(self.request.user)

    # Writes go through the same services as the settings pages: the creator
    # becomes the project's admin; a change of k reopens or completes the
    # comparisons that follow it, under the project's row lock.
    def perform_create(self, serializer: s.ProjectSerializer) -> None:
        serializer.instance = project_create_by(
            by=self.request.user, values=serializer.validated_data
        )

    def perform_update(self, serializer: s.ProjectSerializer) -> None:
        serializer.instance, _effects = project_update(
            project=serializer.instance,
            by=self.request.user,
            changes=serializer.validated_data,
        )

    @extend_schema(
        request=None,
        responses={
            200: s.NextSerializer,
            204: OpenApiResponse(description="Nothing left to label for you."),
        },
        summary="Lease the next comparison to label",
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def next(self, request: Request, pk: str | None = None) -> HttpResponse:
        # No get_object(): the queue reads the membership (with the project's
        # settings) in the query that locks it, and answers 404 for non-members and
        # unknown projects, as get_object would; one query per request saved.
        project_id = path_id(pk, "Project not found.")
        assignment = comparison_next_for(annotator=request.user, project=project_id)
        if assignment is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        payload = selectors.assignment_payload(assignment)
        return HttpResponse(s.next_data(payload))  # NextSerializer's shape

    @extend_schema(
        request=None,
        responses={
            200: s.RankingItemSerializer,
            204: OpenApiResponse(description="Nothing left to rank for you."),
        },
        summary="Lease the next ranking item to rank",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="ranking-next",
        permission_classes=[IsAuthenticated],
    )
    def ranking_next(self, request: Request, pk: str | None = None) -> HttpResponse:
        # POST, as ``next`` is: it writes a lease (labelapp.queue.rankings), so a
        # crawler, a prefetch or a cache must not trigger it. Asking again gives
        # the same item back until it is ranked, skipped or the lease runs out.
        project_id = path_id(pk, "Project not found.")
        lease = ranking_item_lease_for(annotator=request.user, project_id=project_id)
        if lease is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        payload = ranking_item_payload(item=lease.item, user=request.user)
        return HttpResponse(s.RankingItemSerializer(payload).data)

    def _administered(self) -> models.Project:
        project = self.get_object()
        if not access.can_admin(user=self.request.user, project=project):
            raise PermissionDenied("Only project admins start training and rounds.")
        return project

    @extend_schema(
        request=None,
        responses={202: s.JobSerializer, 409: OpenApiResponse(description="Active")},
        summary="Start reward-model training now (admins)",
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def train(self, request: Request, pk: str | None = None) -> HttpResponse:
        job = training_start(project=self._administered(), created_by=request.user)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: s.JobSerializer, 409: OpenApiResponse(description="Active")},
        summary="Start a rejection-sampling round now (admins)",
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def round(self, request: Request, pk: str | None = None) -> HttpResponse:
        job = round_start(project=self._administered(), created_by=request.user)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: s.JobSerializer, 409: OpenApiResponse(description="Active")},
        summary="Start policy training now (admins)",
        description="Trains a policy version on the data guard's examples from "
        "every round so far, evaluates it against the current policy and promotes "
        "it (or says why not). Needs a promoted reward model.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="train-policy",
        permission_classes=[IsAuthenticated],
    )
    def train_policy(self, request: Request, pk: str | None = None) -> HttpResponse:
        job = policy_start(project=self._administered(), created_by=request.user)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: s.JobSerializer},
        summary="Score the open comparisons for the queue's order now (admins)",
        description="Scores every open comparison with the promoted reward model "
        "and orders the queue by the project's selection_strategy (random: clears "
        "the scores). Needs a promoted reward model unless the strategy is random.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="score-comparisons",
        permission_classes=[IsAuthenticated],
    )
    def score_comparisons(
        self, request: Request, pk: str | None = None
    ) -> HttpResponse:
        job = scoring_start(project=self._administered(), created_by=request.user)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: s.JobSerializer},
        summary="Measure what the selection strategy saves (admins)",
        description="Replays label selection on the project's own human labels: "
        "each strategy (the project's included) picks pairs from a pool whose "
        "simulated annotators answer as the real ones did, with a cheap stand-in "
        "reward model retrained per step; the job's result holds the accuracy "
        "curves and the labels each strategy needs to reach random's final "
        "accuracy, which the quality page shows. Fewer than 60 human-labelled "
        "comparisons is a 400 naming the count.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="strategy-gain",
        permission_classes=[IsAuthenticated],
    )
    def strategy_gain(self, request: Request, pk: str | None = None) -> HttpResponse:
        job = strategy_gain_start(project=self._administered(), created_by=request.user)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.ProgressSerializer, summary="Your progress")
    @action(detail=True, methods=["get"], permission_classes=[IsAuthenticated])
    def progress(self, request: Request, pk: str | None = None) -> HttpResponse:
        project = self.get_object()
        data = selectors.project_progress(user=request.user, project=project)
        return HttpResponse(s.ProgressSerializer(data).data)


@extend_schema_view(list=extend_schema(parameters=_int_params("project")))
class PromptViewSet(_Scoped, viewsets.ModelViewSet):
    model = models.Prompt
    serializer_class = s.PromptSerializer
    permission_classes = [IsAuthenticated, ProjectAdminWrites]
    http_method_names = ["get", "post", "head", "options"]  # prompts are immutable

    def scoped_queryset(self) -> QuerySet:
        qs = selectors.prompts_for(self.request.user)
        return _filter_ints(self.request, qs, {"project": "project_id"})

    def perform_create(self, serializer: s.PromptSerializer) -> None:
        serializer.instance = prompt_create(**serializer.validated_data)


@extend_schema_view(list=extend_schema(parameters=_int_params("project", "prompt")))
class ResponseViewSet(_Scoped, viewsets.ModelViewSet):
    model = models.Response
    serializer_class = s.ResponseSerializer
    permission_classes = [IsAuthenticated, ProjectAdminWrites]
    http_method_names = ["get", "post", "head", "options"]

    def scoped_queryset(self) -> QuerySet:
        qs = selectors.responses_for(self.request.user)
        return _filter_ints(
            self.request, qs, {"project": "prompt__project_id", "prompt": "prompt_id"}
        )

    def perform_create(self, serializer: s.ResponseSerializer) -> None:
        serializer.instance = response_create(**serializer.validated_data)


COMPARISON_STATUS = ["open", "complete", "retired"]
COMPARISON_ORIGIN = models.Comparison.Origin.values


@extend_schema_view(
    list=extend_schema(
        parameters=[
            *_int_params("project"),
            OpenApiParameter(
                "round",
                OpenApiTypes.INT,
                description="Filter by round number (as the UI and exports show "
                "it; with project, that project's round).",
            ),
            OpenApiParameter(
                "round_id", OpenApiTypes.INT, description="Filter by round id."
            ),
            _enum_param("status", COMPARISON_STATUS),
            _enum_param("origin", COMPARISON_ORIGIN),
        ]
    ),
    partial_update=extend_schema(
        request=s.ComparisonUpdateSerializer, responses=s.ComparisonSerializer
    ),
)
class ComparisonViewSet(_Scoped, viewsets.ModelViewSet):
    model = models.Comparison
    serializer_class = s.ComparisonSerializer
    permission_classes = [IsAuthenticated, ProjectAdminWrites]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def scoped_queryset(self) -> QuerySet:
        request = self.request
        qs = selectors.comparisons_for(request.user)
        qs = _filter_ints(
            request,
            qs,
            {
                "project": "project_id",
                "round": "round__number",
                "round_id": "round_id",
            },
        )
        if value := _choice_param(request, "status", COMPARISON_STATUS):
            qs = qs.filter(status=value)
        if value := _choice_param(request, "origin", COMPARISON_ORIGIN):
            qs = qs.filter(origin=value)
        return qs

    def get_serializer_class(self):
        if self.action == "partial_update":
            return s.ComparisonUpdateSerializer
        return s.ComparisonSerializer

    def perform_create(self, serializer: s.ComparisonSerializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance, _ = comparison_create(
            project=data.pop("project"),
            response_x=data.pop("response_a"),
            response_y=data.pop("response_b"),
            origin=data.get("origin", models.Comparison.Origin.API),
            priority=data.get("priority", 0),
            labels_required=data.get("labels_required"),
            is_gold=data.get("is_gold", False),
            gold_choice=data.get("gold_choice", ""),
            round=data.get("round"),
            if_exists="conflict",
        )

    def perform_update(self, serializer: s.ComparisonUpdateSerializer) -> None:
        serializer.instance = comparison_update(
            comparison=serializer.instance, **serializer.validated_data
        )

    def partial_update(self, request: Request, *args, **kwargs) -> HttpResponse:
        super().partial_update(request, *args, **kwargs)
        return HttpResponse(s.ComparisonSerializer(self.get_object()).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            *_int_params("project"),
            _enum_param("state", ["leased", "labelled", "skipped", "expired"]),
        ]
    )
)
class AssignmentViewSet(_Scoped, viewsets.ReadOnlyModelViewSet):
    model = models.Assignment
    serializer_class = s.AssignmentSerializer

    def scoped_queryset(self) -> QuerySet:
        request = self.request
        qs = selectors.assignments_for(request.user)
        qs = _filter_ints(request, qs, {"project": "project_id"})
        states = ["leased", "labelled", "skipped", "expired"]
        if value := _choice_param(request, "state", states):
            qs = qs.filter(state=value)
        return qs

    @extend_schema(
        request=s.LabelInputSerializer,
        responses={
            201: s.SubmittedLabelSerializer,
            200: OpenApiResponse(
                s.SubmittedLabelSerializer, description="Repeat of a stored label."
            ),
        },
        summary="Label your leased comparison (choice in display terms)",
    )
    @action(detail=True, methods=["post"])
    def label(self, request: Request, pk: str | None = None) -> HttpResponse:
        data = s.label_input(request.data)  # LabelInputSerializer's rules
        # Ownership is checked by the service (someone else's assignment: 404).
        label, created = label_submit(
            assignment_id=path_id(pk), annotator=request.user, **data
        )
        return HttpResponse(
            s.submitted_label_data(label),  # SubmittedLabelSerializer's shape
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=s.SkipInputSerializer, responses=s.AssignmentSerializer)
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk: str | None = None) -> HttpResponse:
        data = s.SkipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = assignment_skip(
            assignment_id=path_id(pk),
            annotator=request.user,
            reason=data.validated_data["reason"],
        )
        return HttpResponse(s.AssignmentSerializer(assignment).data)


_MAX_ID = 2**63 - 1  # bigint: a larger id cannot exist (and cannot be bound)


def path_id(pk: str | None, not_found: str = "Assignment not found.") -> int:
    """A URL's numeric id as a bigint; NotFound (404) for one that cannot exist."""
    try:
        value = int(pk or "")
    except ValueError:
        raise NotFound(not_found) from None
    if not 0 < value <= _MAX_ID:
        raise NotFound(not_found)
    return value


class _ProjectScopedReadOnly(_Scoped, viewsets.ReadOnlyModelViewSet):
    selector = staticmethod(selectors.jobs_for)

    def scoped_queryset(self) -> QuerySet:
        qs = self.selector(self.request.user)
        return _filter_ints(self.request, qs, {"project": "project_id"})


@extend_schema_view(list=extend_schema(parameters=_int_params("project")))
class ModelVersionViewSet(_ProjectScopedReadOnly):
    model = models.ModelVersion
    serializer_class = s.ModelVersionSerializer
    selector = staticmethod(selectors.model_versions_for)


@extend_schema_view(list=extend_schema(parameters=_int_params("project")))
class RoundViewSet(_ProjectScopedReadOnly):
    model = models.Round
    serializer_class = s.RoundSerializer
    selector = staticmethod(selectors.rounds_for)


@extend_schema_view(list=extend_schema(parameters=_int_params("project")))
class JobViewSet(_ProjectScopedReadOnly):
    model = models.Job
    serializer_class = s.JobSerializer
    selector = staticmethod(selectors.jobs_for)

    @extend_schema(
        request=None,
        responses={
            202: s.JobSerializer,
            409: OpenApiResponse(description="Not failed"),
        },
        summary="Retry a failed job (admins)",
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def retry(self, request: Request, pk: str | None = None) -> HttpResponse:
        job = self.get_object()
        if job.project_id is None or not access.can_admin(
            user=request.user, project=job.project_id
        ):
            raise PermissionDenied("Only project admins retry jobs.")
        job = job_retry(job=job)
        return HttpResponse(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class MeView(APIView):
    @extend_schema(responses=s.MeSerializer, summary="The current user")
    def get(self, request: Request) -> HttpResponse:
        user = request.user
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "is_staff": access.is_staff(user=user),
            "memberships": selectors.memberships_of(user),
        }
        return HttpResponse(s.MeSerializer(data).data)
