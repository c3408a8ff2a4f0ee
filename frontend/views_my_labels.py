"""Annotator comforts (issue 18 item 5): undo the last label from the compare page
(key u), and "my recent labels" with undo and edit while the project's grace period
lasts. The rules and the writes are labelapp.queue.undo's; the page only offers
what labelapp.selectors.my_labels says is still open."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from frontend.guards import project_page
from frontend.views import _json_login_required, payload_with_html, project_progress
from frontend.views_notes import _question
from labelapp.errors import DomainError
from labelapp.models import STRENGTH_LABELS, Assignment, Choice, Label, Project
from labelapp.queue import RATIONALE_MAX_CHARS, label_edit, label_undo
from labelapp.selectors.my_labels import (
    changeable_until,
    last_undoable_label,
    my_recent_labels,
)

CHOICE_TEXT = {
    Choice.A.value: "A is better",
    Choice.B.value: "B is better",
    Choice.TIE.value: "Tie",
    Choice.BOTH_BAD.value: "Both bad",
}


def _answer(label: Label) -> dict[str, Any]:
    """The label as the annotator gave it (display terms)."""
    return {
        "label_id": label.pk,
        "choice": label.displayed_choice,
        "strength": label.strength,
        "rationale": label.rationale,
    }


@_json_login_required
@require_POST
@project_page(role="annotate")
def compare_undo(request: HttpRequest, project: Project, role: str) -> JsonResponse:
    """Undo the annotator's newest label in the project (the compare page's u key):
    200 ``{"assignment": payload, "answer": {...}, "progress": {...}}`` with the
    pair leased back, to show again with the old answer selected; 409 when there is
    nothing left to undo (too old, reviewed, none)."""
    label = last_undoable_label(user=request.user, project=project)
    if label is None:
        return JsonResponse(
            {
                "detail": "Nothing to undo: your last label is reviewed, older than "
                f"{project.undo_grace_seconds} s, or there is none.",
                "code": "conflict",
            },
            status=409,
        )
    answer = _answer(label)
    try:
        assignment = label_undo(label_id=label.pk, annotator=request.user)
    except DomainError as exc:
        return JsonResponse(
            {"detail": str(exc), "code": exc.code}, status=exc.http_status
        )
    assignment = Assignment.objects.select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ).get(pk=assignment.pk)
    return JsonResponse(
        {
            "assignment": payload_with_html(assignment),
            "answer": answer,
            "progress": project_progress(request.user, project),
        }
    )


@require_GET
@project_page(role="annotate")
def my_labels(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    now = timezone.now()
    rows = []
    for label in my_recent_labels(user=request.user, project=project):
        comparison = label.comparison
        left, right = comparison.response_a, comparison.response_b
        if label.shown_swapped:
            left, right = right, left
        rows.append(
            {
                "label": label,
                "choice": label.displayed_choice,
                "choice_text": CHOICE_TEXT.get(label.displayed_choice, label.choice),
                "until": changeable_until(label, project, now),
                "question": _question(comparison.prompt.messages),
                "left": left.text,
                "right": right.text,
            }
        )
    return render(
        request,
        "frontend/my_labels.html",
        {
            "project": project,
            "rows": rows,
            "choices": list(CHOICE_TEXT.items()),
            "strengths": sorted(STRENGTH_LABELS.items()),
            "rationale_max": RATIONALE_MAX_CHARS,
        },
    )


def _own_label(project: Project, label_id: int, user: Any) -> Label:
    return get_object_or_404(
        Label, pk=label_id, annotator=user, comparison__project=project
    )


@require_POST
@project_page(role="annotate")
def my_label_edit(
    request: HttpRequest, project: Project, role: str, label_id: int
) -> HttpResponse:
    label = _own_label(project, label_id, request.user)
    strength_raw = request.POST.get("strength", "")
    try:
        strength = int(strength_raw) if strength_raw else None
    except ValueError:
        strength = -1  # the validator names it
    try:
        label_edit(
            label_id=label.pk,
            annotator=request.user,
            choice=request.POST.get("choice", ""),
            strength=strength,
            rationale=request.POST.get("rationale", "").strip(),
        )
    except DomainError as exc:
        messages.error(request, f"Label {label.pk} was not changed: {exc}")
    else:
        messages.success(request, f"Label {label.pk} changed.")
    return HttpResponseRedirect(
        reverse("frontend:my-labels", args=[project.pk]) + f"#label-{label.pk}"
    )


@require_POST
@project_page(role="annotate")
def my_label_undo(
    request: HttpRequest, project: Project, role: str, label_id: int
) -> HttpResponse:
    """Undo from the list: the pair is leased back, so the compare page (where this
    sends the annotator) shows it first."""
    label = _own_label(project, label_id, request.user)
    try:
        label_undo(label_id=label.pk, annotator=request.user)
    except DomainError as exc:
        messages.error(request, f"Label {label.pk} was not undone: {exc}")
        return HttpResponseRedirect(reverse("frontend:my-labels", args=[project.pk]))
    return HttpResponseRedirect(reverse("frontend:compare", args=[project.pk]))
