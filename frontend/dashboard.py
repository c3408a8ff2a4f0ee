"""Reviewer and admin pages: review queue, gold items, quality dashboard, plots and
export jobs. Views stay thin: reads come from labelapp.review / quality / plots,
writes go through services (label_review, comparison_mark_gold,
annotators_flag_and_pause, export_enqueue).

Access: non-members get 404 (project ids cannot be probed), members without the role
get 403, staff count as admins of every project.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from frontend.forms import GOLD_LABELS, ExportForm, GoldForm, ReviewForm
from frontend.plots import PLOTS
from frontend.rendering import render_markdown
from labelapp import exports_jobs, quality, selectors
from labelapp.aggregation import label_review
from labelapp.errors import DomainError
from labelapp.gold import comparison_mark_gold
from labelapp.models import (
    STRENGTH_LABELS,
    Choice,
    Comparison,
    Job,
    Label,
    Membership,
    Project,
)
from labelapp.review import (
    REVIEW_ROLES,
    ReviewFilters,
    review_filter_choices,
    review_queue,
    role_in,
)

ADMIN_ROLES = (Membership.Role.ADMIN,)
REVIEW_PAGE_SIZE = 20
CHOICE_TEXT = {
    Choice.A: "A",
    Choice.B: "B",
    Choice.TIE: "Tie",
    Choice.BOTH_BAD: "Both bad",
}
# The SVG is its own document when opened directly: no scripts, only its own inline
# <style> (matplotlib writes one), which the page CSP would block.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"

View = Callable[..., HttpResponseBase]


def project_page(roles: tuple[str, ...]) -> Callable[[View], View]:
    """Login required; the project (by ``project_id``) must be visible to the user
    (else 404) and the user's role in ``roles`` (else 403). The view receives the
    project and the role instead of the id."""

    def decorate(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(
            request: HttpRequest, project_id: int, **kwargs: Any
        ) -> HttpResponseBase:
            project = get_object_or_404(
                selectors.projects_for(request.user), pk=project_id
            )
            role = role_in(request.user, project)
            if role not in roles:
                raise PermissionDenied("Your role in this project cannot see this.")
            return view(request, project, role, **kwargs)

        return wrapper

    return decorate


def _tabs(project: Project, role: str, active: str) -> dict[str, Any]:
    return {
        "project": project,
        "active_tab": active,
        "can_admin": role in ADMIN_ROLES,
    }


# ---------------------------------------------------------------------------
# Review queue
# ---------------------------------------------------------------------------


def _label_row(label: Label, comparison: Comparison, filters: ReviewFilters) -> dict:
    gold_miss = comparison.is_gold and label.choice != comparison.gold_choice
    return {
        "label": label,
        "choice_text": CHOICE_TEXT.get(label.choice, label.choice),
        "strength_text": STRENGTH_LABELS.get(label.strength or 0, ""),
        "seconds": label.duration_ms / 1000 if label.duration_ms is not None else None,
        "gold_miss": gold_miss,
        "highlight": filters.annotator == label.annotator_id,
    }


def _review_item(comparison: Comparison, filters: ReviewFilters) -> dict:
    messages_html = [
        {"role": m.get("role", ""), "html": render_markdown(str(m.get("content", "")))}
        for m in (comparison.prompt.messages or [])
        if isinstance(m, dict)
    ]
    return {
        "comparison": comparison,
        "messages": messages_html,
        "a_html": render_markdown(comparison.response_a.text),
        "b_html": render_markdown(comparison.response_b.text),
        "labels": [
            _label_row(lb, comparison, filters) for lb in comparison.labels.all()
        ],
        "gold_text": GOLD_LABELS.get(comparison.gold_choice, ""),
        "gold_form": GoldForm(initial={"gold_choice": comparison.gold_choice}),
    }


@require_GET
@project_page(REVIEW_ROLES)
def review(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    filters = ReviewFilters.from_query(request.GET)
    page = Paginator(
        review_queue(project=project, filters=filters), REVIEW_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    context = {
        **_tabs(project, role, "review"),
        "page": page,
        "items": [_review_item(c, filters) for c in page.object_list],
        "filters": filters,
        "filter_query": urlencode(filters.as_query()),
        "choices": review_filter_choices(project),
    }
    return render(request, "frontend/review.html", context)


def _back_to_review(
    request: HttpRequest, project: Project, anchor: str
) -> HttpResponseRedirect:
    """Back to the queue with the filters and page the form was posted from (taken
    from the form's hidden fields and re-validated, never a raw URL)."""
    query = ReviewFilters.from_query(request.POST).as_query()
    page = request.POST.get("page", "")
    if page.isdigit():
        query["page"] = page
    url = reverse("frontend:review", args=[project.pk])
    if query:
        url += "?" + urlencode(query)
    return HttpResponseRedirect(f"{url}#{anchor}")


@require_POST
@project_page(REVIEW_ROLES)
def review_label(
    request: HttpRequest, project: Project, role: str, label_id: int
) -> HttpResponse:
    label = get_object_or_404(
        Label.objects.select_related("comparison"),
        pk=label_id,
        comparison__project=project,
    )
    form = ReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Label {label.pk}: {form.errors.as_text()}")
    else:
        try:
            label_review(
                label=label,
                reviewer=request.user,
                state=form.cleaned_data["state"],
                note=form.cleaned_data["note"],
            )
        except DomainError as exc:
            messages.error(request, f"Label {label.pk}: {exc}")
        else:
            messages.success(request, f"Label {label.pk} {form.cleaned_data['state']}.")
    return _back_to_review(request, project, f"label-{label.pk}")


@require_POST
@project_page(ADMIN_ROLES)
def review_gold(
    request: HttpRequest, project: Project, role: str, comparison_id: int
) -> HttpResponse:
    comparison = get_object_or_404(Comparison, pk=comparison_id, project=project)
    form = GoldForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Comparison {comparison.pk}: {form.errors.as_text()}")
    else:
        choice = form.cleaned_data["gold_choice"]
        try:
            comparison_mark_gold(comparison=comparison, choice=choice, by=request.user)
        except DomainError as exc:
            messages.error(request, f"Comparison {comparison.pk}: {exc}")
        else:
            messages.success(
                request,
                f"Comparison {comparison.pk} is "
                + (f"gold ({GOLD_LABELS[choice]})." if choice else "no longer gold."),
            )
    return _back_to_review(request, project, f"comparison-{comparison.pk}")


# ---------------------------------------------------------------------------
# Quality dashboard and plots
# ---------------------------------------------------------------------------


def _diversity_table(trend: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds × metrics (the metric names vary with what the round recorded)."""
    keys = sorted({k for row in trend for k in row if k != "round"})
    rows = [
        {"round": row["round"], "values": [row.get(k) for k in keys]}
        for row in trend
        if len(row) > 1
    ]
    return {"keys": keys, "rows": rows}


@require_GET
@project_page(REVIEW_ROLES)
def quality_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    report = quality.project_quality_report(project=project)
    context = {
        **_tabs(project, role, "quality"),
        "report": report,
        "flagged_users": [a for a in report["annotators"] if a["flagged"]],
        "diversity": _diversity_table(report["reward_monitor"]["diversity"]),
        "plots": [
            {
                "name": name,
                "alt": alt,
                "url": reverse("frontend:plot", args=[project.pk, name]),
            }
            for name, (alt, _render) in PLOTS.items()
        ],
    }
    return render(request, "frontend/quality.html", context)


@require_POST
@project_page(ADMIN_ROLES)
def quality_pause_flagged(
    request: HttpRequest, project: Project, role: str
) -> HttpResponse:
    # The project flag governs automatic pausing; this button is an explicit admin
    # decision, so it applies the pause even when automatic pausing is off.
    project.pause_flagged_annotators = True
    paused = quality.annotators_flag_and_pause(project=project)
    if paused:
        names = Membership.objects.filter(project=project, user_id__in=paused)
        messages.success(
            request,
            "Paused: "
            + ", ".join(
                sorted(m.user.get_username() for m in names.select_related("user"))
            )
            + ".",
        )
    else:
        messages.info(request, "No flagged annotator left to pause.")
    return HttpResponseRedirect(reverse("frontend:quality", args=[project.pk]))


@require_GET
@project_page(REVIEW_ROLES)
def plot(request: HttpRequest, project: Project, role: str, name: str) -> HttpResponse:
    if name not in PLOTS:
        raise Http404("No such plot.")
    _alt, render_plot = PLOTS[name]
    response = HttpResponse(render_plot(project), content_type="image/svg+xml")
    response["Content-Security-Policy"] = SVG_CSP
    response["X-Content-Type-Options"] = "nosniff"
    # Private: the data behind it is visible to reviewers only.
    response["Cache-Control"] = "private, max-age=60"
    return response


# ---------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------


def _job_row(job: Job) -> dict[str, Any]:
    files: list[tuple[str, int]] = []
    if job.status == Job.Status.SUCCEEDED:
        try:
            files = list(exports_jobs.export_files(job))
        except DomainError:
            files = []
    return {"job": job, "params": job.params, "files": files}


@require_http_methods(["GET", "POST"])
@project_page(ADMIN_ROLES)
def exports(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    if request.method == "POST":
        form = ExportForm(request.POST)
        if form.is_valid():
            try:
                job, created = exports_jobs.export_enqueue(
                    project=project, params=form.job_params(), by=request.user
                )
            except DomainError as exc:
                messages.error(request, str(exc))
            else:
                if created:
                    messages.success(request, f"Export job #{job.pk} started.")
                else:
                    messages.info(
                        request,
                        f"Export job #{job.pk} is still {job.status}; wait for it "
                        "to finish before starting another.",
                    )
                return HttpResponseRedirect(
                    reverse("frontend:exports", args=[project.pk])
                )
    else:
        form = ExportForm()
    jobs = Job.objects.filter(project=project, kind=Job.Kind.EXPORT).order_by(
        "-created_at"
    )[:50]
    context = {
        **_tabs(project, role, "exports"),
        "form": form,
        "jobs": [_job_row(job) for job in jobs],
        "has_active": any(j.status in Job.ACTIVE for j in jobs),
    }
    return render(request, "frontend/exports.html", context)


@require_GET
@project_page(ADMIN_ROLES)
def export_download(
    request: HttpRequest, project: Project, role: str, job_id: int, filename: str
) -> FileResponse:
    job = get_object_or_404(Job, pk=job_id, project=project, kind=Job.Kind.EXPORT)
    try:
        path = exports_jobs.export_file(job, filename)
    except DomainError:
        raise Http404("No such file in this export.") from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
