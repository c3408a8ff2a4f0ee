"""Reads. Every queryset the API serves starts here, filtered to what the user may
see, so a missing filter cannot leak another annotator's data (no IDOR: objects
outside the queryset are simply not found).

Who sees what:
* staff (the "admin" role of create_user) see everything;
* every member sees the projects they belong to, their own assignments and labels;
* reviewers and admins of a project also see its prompts, responses (with reward
  scores), comparisons (with gold answers), labels, model versions, rounds and jobs.
  Annotators do not: that would show them gold answers, model scores and other
  annotators' choices before they label.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from labelapp import access
from labelapp.models import (
    Assignment,
    Comparison,
    Job,
    Label,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    Response,
    Round,
)

# Who sees what is decided in labelapp.access; these only apply it to querysets.
STAFF_ROLES = access.REVIEW_ROLES


def _reviewable(user: AbstractBaseUser, qs: QuerySet, field: str) -> QuerySet:
    ids = access.project_ids_with_role(user=user, roles=access.REVIEW_ROLES)
    return qs if ids is None else qs.filter(**{f"{field}__in": ids})


def projects_for(user: AbstractBaseUser) -> QuerySet[Project]:
    return access.visible_projects(user=user)


# Compatibility names for importers in other helpers' modules (exports_jobs); the
# answers are labelapp.access's.
def is_staff(user: AbstractBaseUser) -> bool:
    return access.is_staff(user=user)


def projects_administered_by(user: AbstractBaseUser) -> QuerySet[Project]:
    return access.administered_projects(user=user)


def can_administer(user: AbstractBaseUser, project_id: int) -> bool:
    return access.can_admin(user=user, project=project_id)


def administers_any(user: AbstractBaseUser) -> bool:
    return access.administers_any(user=user)


def prompts_for(user: AbstractBaseUser) -> QuerySet[Prompt]:
    return _reviewable(user, Prompt.objects.all(), "project_id")


def responses_for(user: AbstractBaseUser) -> QuerySet[Response]:
    return _reviewable(user, Response.objects.all(), "prompt__project_id")


def comparisons_for(user: AbstractBaseUser) -> QuerySet[Comparison]:
    return _reviewable(user, Comparison.objects.all(), "project_id")


def model_versions_for(user: AbstractBaseUser) -> QuerySet[ModelVersion]:
    return _reviewable(user, ModelVersion.objects.all(), "project_id")


def rounds_for(user: AbstractBaseUser) -> QuerySet[Round]:
    return _reviewable(user, Round.objects.all(), "project_id")


def jobs_for(user: AbstractBaseUser) -> QuerySet[Job]:
    return _reviewable(user, Job.objects.all(), "project_id")


def labels_for(user: AbstractBaseUser) -> QuerySet[Label]:
    """Own labels, plus all labels of projects the user reviews."""
    ids = access.project_ids_with_role(user=user, roles=access.REVIEW_ROLES)
    if ids is None:
        return Label.objects.all()
    return Label.objects.filter(Q(annotator=user) | Q(comparison__project_id__in=ids))


def assignments_for(user: AbstractBaseUser) -> QuerySet[Assignment]:
    if access.is_staff(user=user):
        return Assignment.objects.all()
    return Assignment.objects.filter(annotator=user)


def memberships_of(user: AbstractBaseUser) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("project")


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
