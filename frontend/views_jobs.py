"""The jobs page: background jobs with live progress, reward-model versions, rounds.

Reviewers and admins of a project (and staff) see it; only admins start jobs."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from labelapp import selectors
from labelapp.aggregation import can_review
from labelapp.errors import DomainError
from labelapp.jobs import job_retry
from labelapp.loop import loop_overview, round_start, training_start
from labelapp.models import Job, Project


def _visible_project(request: HttpRequest, project_id: int) -> Project:
    project = get_object_or_404(Project, pk=project_id)
    if not (selectors.is_staff(request.user) or can_review(request.user, project.pk)):
        raise Http404("No such project.")  # no probing of project ids
    return project


@login_required
@require_GET
def jobs_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _visible_project(request, project_id)
    context = {
        "project": project,
        "overview": loop_overview(project),
        "can_admin": selectors.can_administer(request.user, project.pk),
        "active_tab": "jobs",
    }
    return render(request, "frontend/jobs.html", context)


@login_required
@require_GET
def jobs_json(request: HttpRequest, project_id: int) -> JsonResponse:
    project = _visible_project(request, project_id)
    overview = loop_overview(project)
    return JsonResponse({"jobs": overview["jobs"]})


@login_required
@require_POST
def jobs_start(request: HttpRequest, project_id: int, kind: str) -> HttpResponse:
    project = _visible_project(request, project_id)
    if not selectors.can_administer(request.user, project.pk):
        return HttpResponse("Only project admins start jobs.", status=403)
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


@login_required
@require_POST
def jobs_retry(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project = _visible_project(request, project_id)
    if not selectors.can_administer(request.user, project.pk):
        return HttpResponse("Only project admins retry jobs.", status=403)
    job = get_object_or_404(Job, pk=job_id, project=project)
    try:
        job_retry(job=job)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{job.pk} queued again.")
    return redirect("frontend:jobs", project_id=project.pk)
