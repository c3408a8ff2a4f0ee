"""Every permission question, one answer each (as Zulip's ``access_*`` helpers).

API permissions, services, selectors and the page decorator (``frontend.guards``) ask
here; nothing else reads ``is_staff`` or a membership role to decide who may do what.

The rules:

* **staff** (Django ``is_staff`` or ``is_superuser``; the "admin" of ``create_user``)
  see, review and administer every project, member or not;
* a **member** sees the project and labels in it (the queue re-checks "paused");
* **reviewers** and **admins** of a project also see its content (prompts, responses
  with scores, comparisons with gold answers, labels, versions, rounds, jobs) and
  review its labels; annotators do not, so they label blind;
* **admins** of a project change it (content, gold items, jobs, exports);
* labelling is for members only: staff who are not members get no queue.
"""

from __future__ import annotations

from typing import Literal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from labelapp.models import Membership, Project

User = AbstractBaseUser | AnonymousUser
ProjectRef = Project | int

REVIEW_ROLES: tuple[str, ...] = (Membership.Role.REVIEWER, Membership.Role.ADMIN)
ADMIN_ROLES: tuple[str, ...] = (Membership.Role.ADMIN,)


Action = Literal["view", "review", "admin"]
_ROLES_FOR: dict[str, tuple[str, ...]] = {
    "view": tuple(Membership.Role.values),
    "review": REVIEW_ROLES,
    "admin": ADMIN_ROLES,
}


def role_allows(*, role: str | None, action: Action) -> bool:
    """Whether acting in ``role`` (``role_in``'s answer) allows ``action``; for a
    page that has the role already and must not look it up again."""
    return role is not None and role in _ROLES_FOR[action]


def _project_id(project: ProjectRef) -> int:
    return project.pk if isinstance(project, Project) else int(project)


def is_staff(*, user: User) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def membership_role(*, user: User, project: ProjectRef) -> str | None:
    """The role stored in the user's membership of ``project``; None if not a member."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(project_id=_project_id(project), user=user)
        .values_list("role", flat=True)
        .first()
    )


def role_in(*, user: User, project: ProjectRef) -> str | None:
    """The role the user acts in: staff are admins of every project; else the
    membership's role; None for non-members (and anonymous users)."""
    if is_staff(user=user):
        return Membership.Role.ADMIN
    return membership_role(user=user, project=project)


def can_view(*, user: User, project: ProjectRef) -> bool:
    return role_allows(role=role_in(user=user, project=project), action="view")


def can_annotate(*, user: User, project: ProjectRef) -> bool:
    """Members label (any role); staff who are not members do not."""
    return membership_role(user=user, project=project) is not None


def annotation_paused(*, user: User, project: ProjectRef) -> bool | None:
    """For work outside the pairwise queue (rankings): None when the user may not
    annotate in ``project`` (non-members, staff included, as ``can_annotate``),
    else whether their membership is paused (paused members get no new work)."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(project_id=_project_id(project), user=user)
        .values_list("paused", flat=True)
        .first()
    )


def can_review(*, user: User, project: ProjectRef) -> bool:
    return role_allows(role=role_in(user=user, project=project), action="review")


def can_admin(*, user: User, project: ProjectRef) -> bool:
    return role_allows(role=role_in(user=user, project=project), action="admin")


def can_review_own_label(*, user: User) -> bool:
    """Reviewers may not judge their own labels; staff may (they fix data)."""
    return is_staff(user=user)


def can_change_own_label(*, user: User, annotator_id: int) -> bool:
    """Undo and edit (labelapp.queue.undo) are the annotator's alone: not even staff
    or reviewers change someone else's answer (they review it)."""
    return user.pk == annotator_id


def can_create_projects(*, user: User) -> bool:
    return is_staff(user=user)


def administers_any(*, user: User) -> bool:
    return is_staff(user=user) or (
        user.is_authenticated
        and Membership.objects.filter(user=user, role__in=ADMIN_ROLES).exists()
    )


def project_ids_with_role(
    *, user: User, roles: tuple[str, ...] | None = None
) -> QuerySet[Membership] | None:
    """A subquery of the ids of the projects where the user holds one of ``roles``
    (any role when None); None for staff, who hold every role everywhere."""
    if is_staff(user=user):
        return None
    if not user.is_authenticated:
        return Membership.objects.none().values("project_id")
    qs = Membership.objects.filter(user=user)
    if roles is not None:
        qs = qs.filter(role__in=roles)
    return qs.values("project_id")


def _projects_with_role(
    *, user: User, roles: tuple[str, ...] | None
) -> QuerySet[Project]:
    ids = project_ids_with_role(user=user, roles=roles)
    if ids is None:
        return Project.objects.all()
    return Project.objects.filter(id__in=ids)


def visible_projects(*, user: User) -> QuerySet[Project]:
    """Projects the user sees: every project for staff, else their memberships."""
    return _projects_with_role(user=user, roles=None)


def reviewed_projects(*, user: User) -> QuerySet[Project]:
    return _projects_with_role(user=user, roles=REVIEW_ROLES)


def administered_projects(*, user: User) -> QuerySet[Project]:
    return _projects_with_role(user=user, roles=ADMIN_ROLES)


def can_see_label_notes(
    *, user: User, label_annotator_id: int, project: ProjectRef
) -> bool:
    """A label's discussion notes are for the project's reviewers and admins
    (staff included) and for the label's own annotator while a member; nobody
    else, other annotators of the project included. Whoever sees a thread may add
    to it: reviewers start a discussion, the annotator answers."""
    if can_review(user=user, project=project):
        return True
    return (
        user.is_authenticated
        and user.pk == label_annotator_id
        and membership_role(user=user, project=project) is not None
    )


def label_note_project_ids(*, user: User) -> QuerySet[Membership] | None:
    """Projects whose every label's notes the user sees (``project_ids_with_role``
    for reviewing); None for staff."""
    return project_ids_with_role(user=user, roles=REVIEW_ROLES)
