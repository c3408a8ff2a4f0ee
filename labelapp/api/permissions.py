"""API permissions. Visibility is enforced by the selectors' querysets (objects
outside them are 404); these classes only decide who may write."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from labelapp import selectors


def _project_id(obj: object) -> int | None:
    for path in ("project_id", "prompt.project_id", "comparison.project_id"):
        target = obj
        for part in path.split("."):
            target = getattr(target, part, None)
        if target is not None:
            return target
    return None


class ProjectAdminWrites(BasePermission):
    """Reads for anyone the queryset lets through; writes for staff and the admins
    of the object's project (creation checks the project in the serializer)."""

    message = "Only project admins may change this."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return selectors.administers_any(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return True
        if obj.__class__.__name__ == "Project":
            return selectors.can_administer(request.user, obj.pk)
        project_id = _project_id(obj)
        return project_id is not None and selectors.can_administer(
            request.user, project_id
        )


class StaffCreatesProjects(ProjectAdminWrites):
    """Projects: staff create and delete them; project admins may edit theirs."""

    def has_permission(self, request, view) -> bool:
        if request.method in ("POST", "DELETE") and getattr(view, "action", "") in (
            "create",
            "destroy",
        ):
            return selectors.is_staff(request.user)
        return True
