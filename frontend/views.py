"""Annotator pages. Views stay thin: leasing and labelling live in labelapp.queue, and
labels are posted by the page straight to the REST API like any other client."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from frontend.guards import project_page
from frontend.rendering import render_markdown
from labelapp import access, selectors
from labelapp.api.serializers import NextSerializer
from labelapp.errors import DomainError
from labelapp.models import STRENGTH_LABELS, Assignment, Project
from labelapp.queue import comparison_next_for
from labelapp.selectors.home import daily_label_counts, round_notices
from labelapp.selectors.notes import unread_note_counts
from labelapp.services.notes import round_notices_mark_seen


def _api_url_template(name: str) -> str:
    """A REST API URL with "{id}" where the assignment id goes (the page fills it)."""
    return reverse(name, kwargs={"pk": 0}).replace("/0/", "/{id}/")


# The page may hold its current comparison plus one prefetched (see compare_next).
MAX_HELD_LEASES = 2
MAX_EXCLUDE_IDS = 20


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    # Staff see every project (a project made by import_data has no members yet);
    # everyone else sees their memberships.
    user = request.user
    memberships = {m.project_id: m for m in selectors.memberships_of(user)}
    projects = list(access.visible_projects(user=user).order_by("name", "pk"))
    member_ids = [p.pk for p in projects if p.pk in memberships]
    unread = unread_note_counts(user=user)
    notices = round_notices(user=user, project_ids=member_ids)
    rows = []
    for project in projects:
        membership = memberships.get(project.pk)
        role = access.role_in(user=user, project=project)
        rows.append(
            {
                "project": project,
                "role": membership.get_role_display() if membership else "Staff",
                # Which pages to link (the pages check again).
                "can_label": access.can_annotate(user=user, project=project),
                "can_review": access.role_allows(role=role, action="review"),
                "can_admin": access.role_allows(role=role, action="admin"),
                "paused": membership.paused if membership else False,
                "progress": project_progress(user, project),
                "unread_notes": unread.get(project.pk, 0),
                "round_notices": notices.get(project.pk, []),
            }
        )
    context = {
        "rows": rows,
        "can_create": access.can_create_projects(user=user),
        "daily": _daily_table(user, projects, member_ids),
    }
    return render(request, "frontend/projects.html", context)


def _daily_table(user: Any, projects: list[Project], member_ids: list[int]) -> dict:
    """Labels per UTC day for the projects the user labels in: one row per
    project, one column per day, each cell with a bar scaled to the busiest day
    (a level 0..8: the page's CSP allows no inline styles)."""
    counts = daily_label_counts(user=user, project_ids=member_ids)
    names = {p.pk: p.name for p in projects}
    peak = max((n for days in counts.values() for _d, n in days), default=0) or 1
    rows = [
        {
            "project": names[pid],
            "cells": [{"day": d, "n": n, "level": -(-8 * n // peak)} for d, n in days],
            "total": sum(n for _d, n in days),
        }
        for pid, days in counts.items()
    ]
    days = next(iter(counts.values()), [])
    return {"days": [d for d, _n in days], "rows": rows}


@project_page(role="annotate")
@require_GET
def compare(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    # The notices are shown once here (and on the home page until then): opening
    # the page to label marks them seen.
    notices = round_notices(user=request.user, project_ids=[project.pk])
    round_notices_mark_seen(user=request.user, project=project)
    context = {
        "round_notices": notices.get(project.pk, []),
        "unread_notes": unread_note_counts(user=request.user).get(project.pk, 0),
        "project": project,
        "guidelines_html": render_markdown(project.guidelines),
        "strengths": sorted(STRENGTH_LABELS.items()),
        "progress": project_progress(request.user, project),
        "label_url_template": _api_url_template("api:assignment-label"),
        "skip_url_template": _api_url_template("api:assignment-skip"),
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


def project_progress(user: Any, project: Project) -> dict[str, int]:
    return selectors.project_progress(user=user, project=project)


def payload_with_html(assignment: Assignment) -> dict[str, Any]:
    """The API's ``next`` body (same selector and serializer, a/b in display order)
    plus server-rendered, sanitised ``html`` beside every raw text, so the page never
    renders untrusted markdown itself."""
    payload = dict(NextSerializer(selectors.assignment_payload(assignment)).data)
    for message in payload["prompt"]["messages"]:
        message["html"] = render_markdown(message["content"])
    for side in ("a", "b"):
        payload[side] = {
            **payload[side],
            "html": render_markdown(payload[side]["text"]),
        }
    return payload


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
@project_page(role="annotate")
def compare_next(request: HttpRequest, project: Project, role: str) -> HttpResponseBase:
    """Lease the comparison to show (POST: it creates a lease). Body ``{"exclude":
    [assignment ids]}``: leases the page already holds (shown, or labelled but not yet
    acknowledged); with a non-empty list this is a prefetch and may hold a second
    lease. Always 200 ``{"assignment": payload | null, "progress": {...}}`` (unlike
    the API's 204), so the page gets the progress line with every answer."""
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
    progress = project_progress(request.user, project)
    body = {
        "assignment": payload_with_html(assignment) if assignment else None,
        "progress": progress,
    }
    return JsonResponse(body)
