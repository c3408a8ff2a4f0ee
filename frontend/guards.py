"""The one page decorator: login, the project, and the role a page needs, all
answered by labelapp.access.

A project the user cannot see is a 404 (project ids cannot be probed); a project the
user sees but whose page needs another role is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Literal

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404

from labelapp import access
from labelapp.models import Project

View = Callable[..., HttpResponseBase]
Need = Literal["annotate", "review", "admin"]

_CHECKS: dict[str, Callable[..., bool]] = {
    "annotate": access.can_annotate,
    "review": access.can_review,
    "admin": access.can_admin,
}


def project_page(*, role: Need) -> Callable[[View], View]:
    """Login required; the project (URL kwarg ``project_id``) must be visible to the
    user (else 404) and the user allowed to ``role`` in it (else 403). The view is
    called as ``view(request, project, role_in_project, **other_kwargs)``."""
    check = _CHECKS[role]

    def decorate(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(
            request: HttpRequest, project_id: int, **kwargs: Any
        ) -> HttpResponseBase:
            user = request.user
            project = get_object_or_404(Project, pk=project_id)
            # A few indexed lookups per page; pages are not the hot path (the
            # queue's endpoints are), so clarity wins over folding them into one.
            user_role = access.role_in(user=user, project=project)
            if user_role is None:
                raise Http404("No such project.")
            if not check(user=user, project=project):
                raise PermissionDenied("Your role in this project cannot see this.")
            return view(request, project, user_role, **kwargs)

        return wrapper

    return decorate
