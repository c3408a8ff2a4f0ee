"""The jobs page: background jobs with live progress, reward-model versions, rounds.

Reviewers and admins of a project (and staff) see it; only admins start jobs
(frontend.guards.project_page)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from frontend.guards import project_page
from labelapp import access
from labelapp.errors import DomainError
from labelapp.jobs import job_retry
from labelapp.loop import loop_overview, round_start, training_start
from labelapp.models import Job, Project


@project_page(role="review")
@require_GET
def jobs_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    context = {
        "project": project,
        "overview": loop_overview(project),
        "can_admin": access.can_admin(user=request.user, project=project),
        "active_tab": "jobs",
    }
    return render(request, "frontend/jobs.html", context)


@project_page(role="review")
@require_GET
def jobs_json(request: HttpRequest, project: Project, role: str) -> JsonResponse:
    overview = loop_overview(project)
    return JsonResponse({"jobs": overview["jobs"]})


@project_page(role="admin")
@require_POST
def jobs_start(
    request: HttpRequest, project: Project, role: str, kind: str
) -> HttpResponse:
    start = {"train": training_start, "round": round_start}.get(kind)
    if start is None:
        raise Http404("Unknown job kind.")
    try:
        job = start(project=project, created_by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Started {job.get_kind_display()} job #{job.pk}.")
    return redirect("frontend:jobs", project_id=project.pk)


@project_page(role="admin")
@require_POST
def jobs_retry(
    request: HttpRequest, project: Project, role: str, job_id: int
) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id, project=project)
    try:
        job_retry(job=job)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{job.pk} queued again.")
    return redirect("frontend:jobs", project_id=project.pk)
