"""Annotator pages. Views stay thin: leasing and labelling live in labelapp.queue, and
labels are posted by the page straight to the REST API like any other client."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, time
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Exists, OuterRef
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from frontend.rendering import render_markdown
from labelapp.errors import DomainError
from labelapp.models import (
    STRENGTH_LABELS,
    Assignment,
    Comparison,
    Label,
    Membership,
    Project,
)
from labelapp.queue import comparison_next_for

# The REST endpoints the page posts labels and skips to (labelapp.api); "{id}" is
# filled in by the page.
LABEL_URL_TEMPLATE = "/api/v1/assignments/{id}/label/"
SKIP_URL_TEMPLATE = "/api/v1/assignments/{id}/skip/"
# The page may hold its current comparison plus one prefetched (see compare_next).
MAX_HELD_LEASES = 2
MAX_EXCLUDE_IDS = 20


def annotator_progress(
    *, annotator: Any, project: Project, now: datetime | None = None
) -> dict[str, int]:
    """Labels done today and in total, and comparisons still open to this annotator."""
    now = now or timezone.now()
    start_of_day = timezone.make_aware(
        datetime.combine(timezone.localdate(now), time.min)
    )
    labels = Label.objects.filter(annotator=annotator, comparison__project=project)
    finished_by_me = Assignment.objects.filter(
        comparison=OuterRef("pk"),
        annotator=annotator,
        state__in=[Assignment.State.LABELLED, Assignment.State.SKIPPED],
    )
    remaining = (
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .exclude(Exists(finished_by_me))
        .count()
    )
    return {
        "done_today": labels.filter(created_at__gte=start_of_day).count(),
        "done_total": labels.count(),
        "remaining": remaining,
    }


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("project")
        .order_by("project__name")
    )
    rows = [
        {
            "project": m.project,
            "role": m.get_role_display(),
            "paused": m.paused,
            "progress": annotator_progress(annotator=request.user, project=m.project),
        }
        for m in memberships
    ]
    return render(request, "frontend/projects.html", {"rows": rows})


def _member_project(request: HttpRequest, project_id: int) -> Project:
    # Non-members get 404, not 403, so project ids cannot be probed.
    return get_object_or_404(Project, pk=project_id, members=request.user)


@login_required
@require_GET
def compare(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _member_project(request, project_id)
    context = {
        "project": project,
        "guidelines_html": render_markdown(project.guidelines),
        "strengths": sorted(STRENGTH_LABELS.items()),
        "progress": annotator_progress(annotator=request.user, project=project),
        "label_url_template": LABEL_URL_TEMPLATE,
        "skip_url_template": SKIP_URL_TEMPLATE,
    }
    return render(request, "frontend/compare.html", context)


def _json_login_required(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., HttpResponseBase]:
    """Like login_required, but a script gets a 401 it can act on, not a redirect."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return JsonResponse(
                {"detail": "Not logged in.", "code": "not_authenticated"}, status=401
            )
        return view(request, *args, **kwargs)

    return wrapper


def assignment_payload(assignment: Assignment) -> dict[str, Any]:
    """The API's ``next`` body (a/b in display order) plus server-rendered, sanitised
    ``html`` beside every raw text, so the page never renders untrusted markdown."""
    comparison = assignment.comparison
    left, right = comparison.response_a, comparison.response_b
    if assignment.swapped:
        left, right = right, left
    messages = [
        {
            "role": str(m.get("role", "")),
            "content": str(m.get("content", "")),
            "html": render_markdown(str(m.get("content", ""))),
        }
        for m in comparison.prompt.messages
    ]
    return {
        "assignment_id": assignment.pk,
        "comparison_id": comparison.pk,
        "prompt": {"messages": messages},
        "a": {
            "response_id": left.pk,
            "text": left.text,
            "html": render_markdown(left.text),
        },
        "b": {
            "response_id": right.pk,
            "text": right.text,
            "html": render_markdown(right.text),
        },
        "lease_expires_at": assignment.expires_at.isoformat(),
    }


def _parse_exclude(request: HttpRequest) -> list[int] | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    exclude = body.get("exclude", []) if isinstance(body, dict) else None
    if not isinstance(exclude, list) or len(exclude) > MAX_EXCLUDE_IDS:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in exclude):
        return None
    return exclude


@_json_login_required
@require_POST
def compare_next(request: HttpRequest, project_id: int) -> HttpResponseBase:
    """Lease the comparison to show (POST: it creates a lease). Body ``{"exclude":
    [assignment ids]}``: leases the page already holds (shown, or labelled but not yet
    acknowledged); with a non-empty list this is a prefetch and may hold a second
    lease. 204 when nothing is left."""
    project = _member_project(request, project_id)
    exclude = _parse_exclude(request)
    if exclude is None:
        return JsonResponse(
            {
                "detail": 'Body must be {"exclude": [assignment ids]}.',
                "code": "invalid",
            },
            status=400,
        )
    try:
        assignment = comparison_next_for(
            annotator=request.user,
            project=project,
            exclude_assignment_ids=exclude,
            max_leases=MAX_HELD_LEASES if exclude else 1,
        )
    except DomainError as exc:
        return JsonResponse(
            {"detail": str(exc), "code": exc.code}, status=exc.http_status
        )
    progress = annotator_progress(annotator=request.user, project=project)
    if assignment is None:
        return JsonResponse({"assignment": None, "progress": progress}, status=200)
    assignment = Assignment.objects.select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ).get(pk=assignment.pk)
    return JsonResponse(
        {"assignment": assignment_payload(assignment), "progress": progress}
    )
