"""API permissions. Visibility is enforced by the selectors' querysets (objects
outside them are 404); these classes only decide who may write. Every answer comes
from labelapp.access."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from labelapp import access
from labelapp.models import Project


def _project_id(obj: object) -> int | None:
    if isinstance(obj, Project):
        return obj.pk
    for path in ("project_id", "prompt.project_id", "comparison.project_id"):
        target = obj
        for part in path.split("."):
            target = getattr(target, part, None)
        if target is not None:
            return target  # type: ignore[return-value]
    return None


class ProjectAdminWrites(BasePermission):
    """Reads for anyone the queryset lets through; writes for staff and the admins
    of the object's project (creation checks the project in the serializer)."""

    message = "Only project admins may change this."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return access.administers_any(user=request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return True
        project_id = _project_id(obj)
        return project_id is not None and access.can_admin(
            user=request.user, project=project_id
        )


class StaffCreatesProjects(ProjectAdminWrites):
    """Projects: staff create and delete them; project admins may edit theirs."""

    def has_permission(self, request, view) -> bool:
        if request.method in ("POST", "DELETE") and getattr(view, "action", "") in (
            "create",
            "destroy",
        ):
            return access.can_create_projects(user=request.user)
        return True
