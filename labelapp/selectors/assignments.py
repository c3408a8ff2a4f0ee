"""Reads for an annotator: the leased pair as shown (no gold, no scores, no other
labels) and their progress in a project."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labelapp.models import Assignment, Comparison, Project


def project_progress(
    *, user: AbstractBaseUser, project: Project, now: datetime | None = None
) -> dict[str, int]:
    """The user's labels in the project today (UTC day) and in total, and how many
    open comparisons they could still be served (not labelled or skipped by them)."""
    now = now or timezone.now()
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    done = Assignment.objects.filter(
        annotator=user, project=project, state=Assignment.State.LABELLED
    )
    finished_by_user = Assignment.objects.filter(
        comparison_id=OuterRef("pk"),
        annotator=user,
        state__in=[Assignment.State.LABELLED, Assignment.State.SKIPPED],
    )
    remaining = (
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .exclude(Exists(finished_by_user))
        .count()
    )
    return {
        "done_today": done.filter(finished_at__gte=start_of_day).count(),
        "done_total": done.count(),
        "remaining": remaining,
    }


def assignment_payload(assignment: Assignment) -> dict:
    """What the annotator is shown: the prompt and both responses in display order.
    No gold answer, no reward, no other labels. An assignment fresh from the queue
    carries its comparison, prompt and responses (one joined query there); anything
    else is loaded here in one query."""
    comparison = _attached_payload(assignment)
    if comparison is None:
        comparison = _payload_comparison(assignment.comparison_id)
    left, right = comparison.response_a, comparison.response_b
    if assignment.swapped:
        left, right = right, left
    return {
        "assignment_id": assignment.pk,
        "comparison_id": comparison.pk,
        "prompt": {"messages": comparison.prompt.messages},
        "a": {"response_id": left.pk, "text": left.text},
        "b": {"response_id": right.pk, "text": right.text},
        "lease_expires_at": assignment.expires_at,
    }


def _attached_payload(assignment: Assignment) -> Comparison | None:
    if not Assignment.comparison.is_cached(assignment):
        return None
    comparison = assignment.comparison
    related = (Comparison.prompt, Comparison.response_a, Comparison.response_b)
    if not all(field.is_cached(comparison) for field in related):
        return None
    return comparison


def _payload_comparison(comparison_id: int) -> Comparison:
    return (
        Comparison.objects.select_related("prompt", "response_a", "response_b")
        .only(
            "id",
            "prompt__messages",
            "response_a__id",
            "response_a__text",
            "response_b__id",
            "response_b__text",
        )
        .get(pk=comparison_id)
    )
