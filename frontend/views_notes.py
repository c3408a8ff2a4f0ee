"""Label discussion pages: a reviewer's note from the review queue, and the
annotator's "notes on my labels" page (with their answers). Reads come from
labelapp.selectors.notes, writes go through labelapp.services.notes, which asks
labelapp.access who may see a thread."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from frontend.dashboard import _back_to_review
from frontend.guards import project_page
from labelapp.errors import DomainError
from labelapp.models import NOTE_MAX_CHARS, Label, Project
from labelapp.selectors.notes import my_noted_labels, notes_of_labels
from labelapp.services.notes import label_note_add, label_notes_mark_read

NOTES_PAGE_LABELS = 100


def _question(messages: object) -> str:
    """The prompt's first user message (a system message says little), as text."""
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict) and m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def _add(request: HttpRequest, label: Label) -> None:
    try:
        label_note_add(
            label=label, author=request.user, body=request.POST.get("body", "")
        )
    except DomainError as exc:
        messages.error(request, f"Note on label {label.pk}: {exc}")
    else:
        messages.success(request, f"Note added to label {label.pk}.")


@require_POST
@project_page(role="review")
def review_label_note(
    request: HttpRequest, project: Project, role: str, label_id: int
) -> HttpResponse:
    label = get_object_or_404(
        Label.objects.select_related("comparison"),
        pk=label_id,
        comparison__project=project,
    )
    _add(request, label)
    return _back_to_review(request, project, f"label-{label.pk}")


@require_GET
@project_page(role="annotate")
def my_notes(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    """The member's own labels that have notes, newest discussion first; opening
    the page marks its notes read (the unread ones are flagged on this render)."""
    labels = list(my_noted_labels(user=request.user, project=project))
    labels = labels[:NOTES_PAGE_LABELS]
    threads = notes_of_labels([lb.pk for lb in labels])
    rows = [
        {
            "label": lb,
            "notes": threads[lb.pk],
            "unread": lb.unread,
            "question": _question(lb.comparison.prompt.messages),
        }
        for lb in labels
    ]
    response = render(
        request,
        "frontend/notes.html",
        {
            "project": project,
            "rows": rows,
            "unread_total": sum(r["unread"] for r in rows),
            "note_max_chars": NOTE_MAX_CHARS,
        },
    )
    label_notes_mark_read(user=request.user, project=project)
    return response


@require_POST
@project_page(role="annotate")
def my_notes_reply(
    request: HttpRequest, project: Project, role: str, label_id: int
) -> HttpResponse:
    """The annotator answers on their own label (anyone else's is a 404, as is a
    label of another project)."""
    label = get_object_or_404(
        Label.objects.select_related("comparison"),
        pk=label_id,
        comparison__project=project,
        annotator=request.user,
    )
    _add(request, label)
    url = reverse("frontend:my-notes", args=[project.pk])
    return HttpResponseRedirect(f"{url}#note-label-{label.pk}")
