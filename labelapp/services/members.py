"""Writes of a project's members: add by username, change a role, remove, and the
one-time invite links that create an account.

An invite's token is shown once, when it is made; only its SHA-256 is stored, so a
copy of the database holds no usable link. Accepting locks the invite row, so two
people racing on one link make one account: the second finds it used.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from labelapp import access
from labelapp.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Invite, Membership, Project

INVITE_TTL = timedelta(days=7)
MAX_INVITE_DAYS = 90
ROLES = tuple(Membership.Role.values)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_admin(by: AbstractBaseUser, project: Project) -> None:
    if not access.can_admin(user=by, project=project):
        raise PermissionDenied("Only admins of a project change its members.")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"unknown role {role!r}; one of: {', '.join(ROLES)}")


def member_add(
    *, project: Project, by: AbstractBaseUser, username: str, role: str
) -> Membership:
    """Make an existing user a member in ``role``; an existing member is a 409."""
    _check_admin(by, project)
    _check_role(role)
    username = username.strip()
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(
            f"no such user: {username!r} (send an invite link to create the account)"
        )
    try:
        with transaction.atomic():
            return Membership.objects.create(project=project, user=user, role=role)
    except IntegrityError:
        raise Conflict(f"{username} is a member already") from None


def _last_admin(membership: Membership) -> bool:
    return (
        membership.role == Membership.Role.ADMIN
        and not Membership.objects.filter(
            project_id=membership.project_id, role=Membership.Role.ADMIN
        )
        .exclude(pk=membership.pk)
        .exists()
    )


def _membership(project: Project, membership_id: int) -> Membership:
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(project=project, pk=membership_id)
        .first()
    )
    if membership is None:
        raise NotFound("no such member of this project")
    return membership


def member_role_set(
    *, project: Project, by: AbstractBaseUser, membership_id: int, role: str
) -> Membership:
    """Change a member's role; the last admin member may not demote themself out
    of the project's administration (staff may: they administer every project)."""
    _check_admin(by, project)
    _check_role(role)
    with transaction.atomic():
        # Lock the project: two admins demoting each other at once would otherwise
        # both see "another admin is left".
        Project.objects.select_for_update().get(pk=project.pk)
        membership = _membership(project, membership_id)
        if (
            role != Membership.Role.ADMIN
            and _last_admin(membership)
            and not access.is_staff(user=by)
        ):
            raise Conflict(
                "this is the project's last admin; make another member admin first"
            )
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def member_remove(*, project: Project, by: AbstractBaseUser, membership_id: int) -> str:
    """Remove a member (their labels stay); returns the username."""
    _check_admin(by, project)
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        membership = _membership(project, membership_id)
        if _last_admin(membership) and not access.is_staff(user=by):
            raise Conflict(
                "this is the project's last admin; make another member admin first"
            )
        name = membership.user.get_username()
        membership.delete()
    return name


def invite_create(
    *,
    project: Project,
    by: AbstractBaseUser,
    role: str,
    ttl: timedelta = INVITE_TTL,
    now: Callable[[], datetime] = timezone.now,
) -> tuple[Invite, str]:
    """A new invite and its token (shown once; only its hash is stored)."""
    _check_admin(by, project)
    _check_role(role)
    if not timedelta(0) < ttl <= timedelta(days=MAX_INVITE_DAYS):
        raise ValidationFailed(f"an invite lasts between 1 and {MAX_INVITE_DAYS} days")
    token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        project=project,
        role=role,
        token_hash=token_hash(token),
        created_by=by,
        expires_at=now() + ttl,
    )
    return invite, token


def invite_revoke(*, project: Project, by: AbstractBaseUser, invite_id: int) -> None:
    _check_admin(by, project)
    deleted, _ = Invite.objects.filter(
        project=project, pk=invite_id, used_at__isnull=True
    ).delete()
    if not deleted:
        raise NotFound("no such open invite")


def invite_usable(*, token: str, now: Callable[[], datetime] = timezone.now) -> Invite:
    """The invite the token opens; NotFound for an unknown, used or expired one (one
    answer for the three, so a link cannot be probed for which it is)."""
    invite = (
        Invite.objects.select_related("project")
        .filter(token_hash=token_hash(token), used_at__isnull=True)
        .first()
    )
    if invite is None or invite.expires_at <= now():
        raise NotFound("This invite link is not valid: it was used, or it expired.")
    return invite


def invite_accept(
    *,
    token: str,
    username: str,
    password: str,
    now: Callable[[], datetime] = timezone.now,
) -> AbstractBaseUser:
    """Create the account and its membership, and mark the invite used; all or
    nothing."""
    username = username.strip()
    user_model = get_user_model()
    if not username:
        raise ValidationFailed("choose a username")
    try:
        user_model.username_validator(username)
    except ValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages)) from None
    with transaction.atomic():
        invite = invite_usable(token=token, now=now)
        # Lock it: a second acceptance of the same link waits here, then finds it
        # used (the re-read below) and makes no second account.
        invite = Invite.objects.select_for_update().get(pk=invite.pk)
        if invite.used_at is not None:
            raise NotFound("This invite link is not valid: it was used, or it expired.")
        if user_model.objects.filter(username__iexact=username).exists():
            raise Conflict(f"the username {username!r} is taken; choose another")
        candidate = user_model(username=username)
        try:
            password_validation.validate_password(password, user=candidate)
        except ValidationError as exc:
            raise ValidationFailed(" ".join(exc.messages)) from None
        user = user_model.objects.create_user(username=username, password=password)
        Membership.objects.create(project=invite.project, user=user, role=invite.role)
        invite.used_at = now()
        invite.used_by = user
        invite.save(update_fields=["used_at", "used_by"])
    return user
