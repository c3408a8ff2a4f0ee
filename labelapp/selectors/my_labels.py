"""The annotator's "my recent labels" page: their newest labels in a project, each
with whether undo and edit are still open for it (the rule itself is enforced by
labelapp.queue.undo; this only says what the page offers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.utils import timezone

from labelapp.models import Assignment, Label, Project

RECENT_LABELS = 50


def my_recent_labels(
    *, user: AbstractBaseUser, project: Project, limit: int = RECENT_LABELS
) -> QuerySet[Label]:
    return (
        Label.objects.filter(annotator=user, comparison__project=project)
        .select_related("comparison__prompt", "comparison__response_a")
        .select_related("comparison__response_b")
        .order_by("-created_at", "-id")[:limit]
    )


def changeable_until(
    label: Label, project: Project, now: datetime | None = None
) -> datetime | None:
    """When undo and edit close for ``label``, or None if they already have (or
    never open: imported, implied by a ranking, reviewed, or a project without
    undo)."""
    now = now or timezone.now()
    if (
        project.undo_grace_seconds <= 0
        or label.source != Label.Source.HUMAN
        or label.assignment_id is None
        or label.review_state != Label.ReviewState.PENDING
    ):
        return None
    until = label.created_at + timedelta(seconds=project.undo_grace_seconds)
    return until if until > now else None


def last_undoable_label(
    *, user: AbstractBaseUser, project: Project, now: datetime | None = None
) -> Label | None:
    """The annotator's newest label in the project, if undo is still open for it."""
    now = now or timezone.now()
    label = (
        Label.objects.filter(
            annotator=user, comparison__project=project, source=Label.Source.HUMAN
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if label is None or changeable_until(label, project, now) is None:
        return None
    return label


def skip_reason_counts(*, project: Project, limit: int = 20) -> list[dict]:
    """The project's skips by reason, most frequent first ("" = none given), for
    the quality page: a prompt set that annotators keep skipping as unclear or
    beyond them says something about the data."""
    rows = (
        Assignment.objects.filter(project=project, state=Assignment.State.SKIPPED)
        .values("skip_reason")
        .annotate(n=Count("id"))
        .order_by("-n", "skip_reason")[:limit]
    )
    return [{"reason": r["skip_reason"], "n": r["n"]} for r in rows]
