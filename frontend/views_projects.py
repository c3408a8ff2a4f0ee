"""Project settings, members and data upload pages (issue 18). Thin: forms coerce,
labelapp.services.{projects,members,uploads} write, labelapp.selectors.{members,
uploads} read, frontend.guards.project_page (on labelapp.access) decides who may.

Staff create projects; admins of a project (and staff) edit it, its members and its
data. An invite link is opened without an account: the token is the permission."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from frontend.forms_projects import (
    InviteAcceptForm,
    InviteForm,
    MemberAddForm,
    ProjectForm,
    RoleForm,
)
from frontend.guards import project_page
from frontend.rendering import MAX_MARKDOWN_CHARS, render_markdown
from labelapp import access
from labelapp.errors import DomainError
from labelapp.models import Project
from labelapp.selectors.members import open_invites, project_members
from labelapp.selectors.uploads import upload_preview
from labelapp.services import members as member_service
from labelapp.services import uploads as upload_service
from labelapp.services.projects import (
    project_create_by,
    project_update,
    project_update_effects,
)


def _tabs(project: Project, active: str) -> dict[str, Any]:
    return {"project": project, "can_admin": True, "active_tab": active}


# --- projects ---------------------------------------------------------------------


@login_required
@require_POST
def markdown_preview(request: HttpRequest) -> JsonResponse:
    """The guidelines' live preview, rendered and sanitised by the same function
    as the compare page's guidelines and model text (frontend.rendering)."""
    if not access.administers_any(user=request.user):
        raise PermissionDenied("Only project admins preview guidelines.")
    text = request.POST.get("text", "")
    if len(text) > MAX_MARKDOWN_CHARS:
        return JsonResponse(
            {"error": f"Guidelines over {MAX_MARKDOWN_CHARS:,} characters."},
            status=400,
        )
    return JsonResponse({"html": render_markdown(text)})


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    if not access.can_create_projects(user=request.user):
        raise PermissionDenied("Only staff create projects.")
    form = ProjectForm(request.POST or None, instance=Project())
    form.fields["name"].widget.attrs["autofocus"] = True
    if request.method == "POST" and form.is_valid():
        try:
            project = project_create_by(by=request.user, values=form.cleaned_data)
        except DomainError as exc:
            form.add_error("name" if "named" in str(exc) else None, str(exc))
        else:
            messages.success(request, f"Created project {project.name}.")
            return redirect("frontend:project-settings", project_id=project.pk)
    return render(
        request,
        "frontend/project_settings.html",
        {"form": form, "creating": True, "project": None},
    )


@project_page(role="admin")
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    # The form works on its own copy: ModelForm writes the posted values onto its
    # instance, and the effects are computed against the stored ones.
    form = ProjectForm(
        request.POST or None, instance=Project.objects.get(pk=project.pk)
    )
    context = {**_tabs(project, "settings"), "form": form, "creating": False}
    if request.method == "POST" and form.is_valid():
        changes = {
            f: v for f, v in form.cleaned_data.items() if getattr(project, f) != v
        }
        effects = project_update_effects(project=project, changes=changes)
        if effects.needs_confirmation and request.POST.get("confirm") != "1":
            context["effects"] = effects.summary()
            return render(request, "frontend/project_settings.html", context)
        try:
            _project, effects = project_update(
                project=project, by=request.user, changes=changes
            )
        except DomainError as exc:
            form.add_error("name" if "named" in str(exc) else None, str(exc))
        else:
            if changes:
                done = " ".join(effects.summary())
                messages.success(
                    request,
                    f"Saved {', '.join(sorted(changes))}."
                    + (f" {done}" if done else ""),
                )
            else:
                messages.info(request, "Nothing changed.")
            return redirect("frontend:project-settings", project_id=project.pk)
    return render(request, "frontend/project_settings.html", context)


# --- members ----------------------------------------------------------------------


def _members_context(project: Project, **extra: Any) -> dict[str, Any]:
    return {
        **_tabs(project, "members"),
        "members": project_members(project=project),
        "invites": open_invites(project=project),
        "add_form": MemberAddForm(),
        "invite_form": InviteForm(),
        "roles": RoleForm.base_fields["role"].choices,
        **extra,
    }


def _done(request: HttpRequest, project: Project, text: str) -> HttpResponse:
    messages.success(request, text)
    return redirect("frontend:members", project_id=project.pk)


def _failed(request: HttpRequest, project: Project, text: str) -> HttpResponse:
    messages.error(request, text)
    return redirect("frontend:members", project_id=project.pk)


@project_page(role="admin")
@require_GET
def members_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    return render(request, "frontend/members.html", _members_context(project))


@project_page(role="admin")
@require_POST
def member_add(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _failed(request, project, "Give a username and a role.")
    try:
        member_service.member_add(project=project, by=request.user, **form.cleaned_data)
    except DomainError as exc:
        return _failed(request, project, str(exc))
    return _done(
        request,
        project,
        f"Added {form.cleaned_data['username']} as {form.cleaned_data['role']}.",
    )


@project_page(role="admin")
@require_POST
def member_role(
    request: HttpRequest, project: Project, role: str, membership_id: int
) -> HttpResponse:
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _failed(request, project, "Choose a role.")
    try:
        m = member_service.member_role_set(
            project=project,
            by=request.user,
            membership_id=membership_id,
            role=form.cleaned_data["role"],
        )
    except DomainError as exc:
        return _failed(request, project, str(exc))
    return _done(request, project, f"{m.user.get_username()} is now {m.role}.")


@project_page(role="admin")
@require_POST
def member_remove(
    request: HttpRequest, project: Project, role: str, membership_id: int
) -> HttpResponse:
    try:
        name = member_service.member_remove(
            project=project, by=request.user, membership_id=membership_id
        )
    except DomainError as exc:
        return _failed(request, project, str(exc))
    return _done(request, project, f"Removed {name} (their labels stay).")


@project_page(role="admin")
@require_POST
def invite_new(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    from datetime import timedelta

    form = InviteForm(request.POST)
    if not form.is_valid():
        return _failed(request, project, "Choose a role and 1 to 90 days.")
    try:
        invite, token = member_service.invite_create(
            project=project,
            by=request.user,
            role=form.cleaned_data["role"],
            ttl=timedelta(days=form.cleaned_data["days"]),
        )
    except DomainError as exc:
        return _failed(request, project, str(exc))
    # Shown once, in this response: only the token's hash is stored.
    link = request.build_absolute_uri(reverse("frontend:invite", args=[token]))
    context = _members_context(project, new_invite=invite, new_link=link)
    return render(request, "frontend/members.html", context)


@project_page(role="admin")
@require_POST
def invite_revoke(
    request: HttpRequest, project: Project, role: str, invite_id: int
) -> HttpResponse:
    try:
        member_service.invite_revoke(
            project=project, by=request.user, invite_id=invite_id
        )
    except DomainError as exc:
        return _failed(request, project, str(exc))
    return _done(request, project, "Invite revoked.")


@require_http_methods(["GET", "POST"])
def invite_accept(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invite = member_service.invite_usable(token=token)
    except DomainError as exc:
        return render(
            request, "frontend/invite.html", {"invalid": str(exc)}, status=404
        )
    form = InviteAcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = member_service.invite_accept(token=token, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(
                request, f"Welcome, {user.get_username()}: you joined {invite.project}."
            )
            return redirect("frontend:projects")
    return render(request, "frontend/invite.html", {"invite": invite, "form": form})


# --- data upload ------------------------------------------------------------------


@project_page(role="admin")
@require_http_methods(["GET", "POST"])
def upload_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    context: dict[str, Any] = {
        **_tabs(project, "upload"),
        "max_bytes": upload_service.MAX_UPLOAD_BYTES,
    }
    if request.method == "POST":
        try:
            staging_id = upload_service.upload_stage(
                project=project, by=request.user, files=request.FILES.getlist("files")
            )
        except DomainError as exc:
            context["error"] = str(exc)
            return render(request, "frontend/upload.html", context, status=400)
        return redirect(
            "frontend:upload-preview", project_id=project.pk, staging_id=staging_id
        )
    return render(request, "frontend/upload.html", context)


@project_page(role="admin")
@require_http_methods(["GET", "POST"])
def upload_preview_page(
    request: HttpRequest, project: Project, role: str, staging_id: str
) -> HttpResponse:
    try:
        files = upload_service.staged_files(project=project, staging_id=staging_id)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("frontend:upload", project_id=project.pk)
    context: dict[str, Any] = {
        **_tabs(project, "upload"),
        "staging_id": staging_id,
        "max_bytes": upload_service.MAX_UPLOAD_BYTES,
    }
    if request.method == "POST":
        if request.POST.get("action") == "discard":
            upload_service.upload_discard(project=project, staging_id=staging_id)
            messages.info(request, "Upload discarded; nothing was imported.")
            return redirect("frontend:upload", project_id=project.pk)
        make_pairs = request.POST.get("make_pairs") == "1"
        big = (
            upload_service.staged_bytes(project=project, staging_id=staging_id)
            > upload_service.JOB_BYTES
        )
        try:
            if big:
                job = upload_service.upload_commit_later(
                    project=project,
                    by=request.user,
                    staging_id=staging_id,
                    make_pairs=make_pairs,
                )
            else:
                result = upload_service.upload_commit(
                    project=project,
                    by=request.user,
                    staging_id=staging_id,
                    make_pairs=make_pairs,
                )
        except DomainError as exc:
            context["error"] = str(exc)
        else:
            if big:
                messages.success(
                    request,
                    f"Import started as job #{job.pk}; its progress is on this page.",
                )
                return redirect("frontend:jobs", project_id=project.pk)
            messages.success(request, f"Imported: {result.summary()}.")
            return redirect("frontend:upload", project_id=project.pk)
    context["previews"] = upload_preview(files=files)
    context["has_errors"] = any(p.error for p in context["previews"])
    status = 400 if context.get("error") else 200
    return render(request, "frontend/upload.html", context, status=status)
