"""Reads of label discussion notes: who sees which (``access.can_see_label_notes``
as a queryset), the notes on a user's own labels and their unread counts."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from labelapp import access
from labelapp.models import Label, LabelNote, Membership, Project


def label_notes_for(user: AbstractBaseUser) -> QuerySet[LabelNote]:
    """Every note the user may read: all notes of the projects they review (every
    project for staff), and the notes on their own labels in projects they are
    still a member of. The queryset form of ``access.can_see_label_notes``."""
    if not user.is_authenticated:
        return LabelNote.objects.none()
    reviewed = access.label_note_project_ids(user=user)
    qs = LabelNote.objects.select_related("author", "label__comparison")
    if reviewed is None:
        return qs
    member = Membership.objects.filter(
        user=user, project_id=OuterRef("label__comparison__project_id")
    )
    return qs.filter(
        Q(label__comparison__project_id__in=reviewed)
        | (Q(label__annotator=user) & Exists(member))
    )


def notes_of_labels(label_ids: list[int]) -> dict[int, list[LabelNote]]:
    """The threads of these labels, oldest note first (the review page, whose
    reader may see every note of its project)."""
    out: dict[int, list[LabelNote]] = {i: [] for i in label_ids}
    notes = (
        LabelNote.objects.filter(label_id__in=label_ids)
        .select_related("author")
        .order_by("created_at", "pk")
    )
    for note in notes:
        out[note.label_id].append(note)
    return out


def my_noted_labels(*, user: AbstractBaseUser, project: Project) -> QuerySet[Label]:
    """The user's own labels in ``project`` that have notes, the most recently
    noted first, each with its thread (oldest first) and comparison loaded."""
    latest = (
        LabelNote.objects.filter(label=OuterRef("pk"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    return (
        Label.objects.filter(annotator=user, comparison__project=project)
        .filter(Exists(LabelNote.objects.filter(label=OuterRef("pk"))))
        .annotate(
            last_note_at=latest,
            unread=Count("notes", filter=Q(notes__read_at__isnull=True)),
        )
        .select_related("comparison__prompt")
        .order_by("-last_note_at", "-pk")
    )


def unread_note_counts(*, user: AbstractBaseUser) -> dict[int, int]:
    """Per project id: notes on the user's own labels they have not seen (one
    grouped query, for the home page)."""
    if not user.is_authenticated:
        return {}
    rows = (
        LabelNote.objects.filter(label__annotator=user, read_at__isnull=True)
        .values("label__comparison__project_id")
        .annotate(n=Count("pk"))
    )
    return {r["label__comparison__project_id"]: r["n"] for r in rows}
