"""Visibility: every queryset the API serves starts here, filtered to what the user
may see, so a missing filter cannot leak another annotator's data (no IDOR: objects
outside the queryset are simply not found).

Who sees what is labelapp.access's answer (read its docstring); in short:
* staff (the "admin" role of create_user) see everything;
* every member sees the projects they belong to, their own assignments and labels;
* reviewers and admins of a project also see its prompts, responses (with reward
  scores), comparisons (with gold answers), labels, model versions, rounds and jobs.
  Annotators do not: that would show them gold answers, model scores and other
  annotators' choices before they label.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

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
