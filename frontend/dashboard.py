"""Reviewer and admin pages: review queue, gold items, quality dashboard, plots and
export jobs. Views stay thin: reads come from labelapp.selectors (review, quality) and plots,
writes go through services (label_review, comparison_mark_gold,
annotators_flag_and_pause, export_enqueue).

Access: ``frontend.guards.project_page`` (labelapp.access's rules): a project the user
cannot see is a 404, a page their role does not open a 403; staff are admins
everywhere.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from frontend.forms import (
    GOLD_LABELS,
    BulkAcceptForm,
    ExportForm,
    GoldForm,
    ReviewForm,
)
from frontend.guards import project_page
from frontend.plots import PLOTS
from frontend.rendering import render_markdown
from labelapp import access
from labelapp.datasets import export_jobs
from labelapp.errors import DomainError
from labelapp.loop.overview import strategy_gain_report
from labelapp.models import (
    NOTE_MAX_CHARS,
    STRENGTH_LABELS,
    Choice,
    Comparison,
    Job,
    Label,
    Membership,
    Project,
)
from labelapp.selectors.my_labels import skip_reason_counts
from labelapp.selectors.notes import notes_of_labels
from labelapp.selectors.quality import project_quality_report
from labelapp.selectors.ranking_review import ranking_review_counts
from labelapp.selectors.review import (
    ReviewFilters,
    bulk_accept_labels,
    review_filter_choices,
    review_next_pending,
    review_queue,
)
from labelapp.services.annotators import annotators_flag_and_pause
from labelapp.services.gold import comparison_mark_gold
from labelapp.services.reviews import label_review, labels_bulk_accept

REVIEW_PAGE_SIZE = 20
CHOICE_TEXT = {
    Choice.A: "A",
    Choice.B: "B",
    Choice.TIE: "Tie",
    Choice.BOTH_BAD: "Both bad",
}
# A label's choice as its annotator saw it (the letters of their rationale).
DISPLAYED_TEXT = {
    Choice.A: "A (left)",
    Choice.B: "B (right)",
    Choice.TIE: "Tie",
    Choice.BOTH_BAD: "Both bad",
}
# The SVG is its own document when opened directly: no scripts, only its own inline
# <style> (matplotlib writes one), which the page CSP would block.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _tabs(project: Project, role: str, active: str) -> dict[str, Any]:
    return {
        "project": project,
        "active_tab": active,
        "can_admin": access.role_allows(role=role, action="admin"),
    }


# ---------------------------------------------------------------------------
# Review queue
# ---------------------------------------------------------------------------


def _label_row(
    label: Label, comparison: Comparison, filters: ReviewFilters, notes: dict
) -> dict:
    gold_miss = comparison.is_gold and label.choice != comparison.gold_choice
    return {
        "label": label,
        "choice_text": CHOICE_TEXT.get(label.choice, label.choice),
        "displayed_text": DISPLAYED_TEXT.get(
            label.displayed_choice, label.displayed_choice
        ),
        "strength_text": STRENGTH_LABELS.get(label.strength or 0, ""),
        "seconds": label.duration_ms / 1000 if label.duration_ms is not None else None,
        "gold_miss": gold_miss,
        "highlight": filters.annotator == label.annotator_id,
        "notes": notes.get(label.pk, []),
    }


def _review_item(comparison: Comparison, filters: ReviewFilters, notes: dict) -> dict:
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
            _label_row(lb, comparison, filters, notes) for lb in comparison.labels.all()
        ],
        "gold_text": GOLD_LABELS.get(comparison.gold_choice, ""),
        "gold_form": GoldForm(initial={"gold_choice": comparison.gold_choice}),
    }


@require_GET
@project_page(role="review")
def review(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    filters = ReviewFilters.from_query(request.GET)
    page = Paginator(
        review_queue(project=project, filters=filters), REVIEW_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    comparisons = list(page.object_list)
    notes = notes_of_labels([lb.pk for c in comparisons for lb in c.labels.all()])
    context = {
        **_tabs(project, role, "review"),
        "page": page,
        "items": [_review_item(c, filters, notes) for c in comparisons],
        "note_max_chars": NOTE_MAX_CHARS,
        "can_review_own": access.can_review_own_label(user=request.user),
        "filters": filters,
        "filter_query": urlencode(filters.as_query()),
        "choices": review_filter_choices(project),
        "bulk_count": _bulk_labels(request, project, filters).count(),
        "bulk_form": BulkAcceptForm(),
        "ranking_counts": ranking_review_counts(project=project),
    }
    return render(request, "frontend/review.html", context)


def _bulk_labels(request, project, filters, min_gold_accuracy=None):
    own = None if access.can_review_own_label(user=request.user) else request.user.pk
    return bulk_accept_labels(
        project=project,
        filters=filters,
        min_gold_accuracy=min_gold_accuracy,
        exclude_annotator=own,
    )


@require_POST
@project_page(role="review")
def review_bulk_accept(
    request: HttpRequest, project: Project, role: str
) -> HttpResponse:
    """Accept every pending label the queue's filters (posted as hidden fields)
    select, optionally only those of annotators above a gold accuracy."""
    filters = ReviewFilters.from_query(request.POST)
    form = BulkAcceptForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Bulk accept: {form.errors.as_text()}")
        return _back_to_review(request, project, "bulk-accept")
    threshold = form.cleaned_data["min_gold_accuracy"]
    labels = _bulk_labels(
        request, project, filters, None if threshold is None else threshold / 100
    )
    try:
        n = labels_bulk_accept(
            project_id=project.pk, reviewer=request.user, labels=labels
        )
    except DomainError as exc:
        messages.error(request, f"Bulk accept: {exc}")
    else:
        messages.success(
            request,
            f"Accepted {n} pending label{'s' * (n != 1)}"
            + (
                f" of annotators with gold accuracy ≥ {threshold:g} %."
                if threshold is not None
                else "."
            ),
        )
    return _back_to_review(request, project, "bulk-accept")


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
@project_page(role="review")
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
            return _to_next_pending(request, project, label)
    return _back_to_review(request, project, f"label-{label.pk}")


def _to_next_pending(
    request: HttpRequest, project: Project, label: Label
) -> HttpResponseRedirect:
    """After a decision: on to the next pending label (review.js posts the one
    after the decided label on the page as ``next``; without it, or when that one
    was reviewed meanwhile, the queue's first pending label), on whichever page of
    the queue holds it now; nothing left pending: back to the decided label."""
    filters = ReviewFilters.from_query(request.POST)
    raw = request.POST.get("next", "")
    own = None if access.can_review_own_label(user=request.user) else request.user.pk
    target = review_next_pending(
        project=project,
        filters=filters,
        page_size=REVIEW_PAGE_SIZE,
        prefer=int(raw) if raw.isdigit() and len(raw) < 19 else None,
        exclude_annotator=own,
    )
    if target is None:
        return _back_to_review(request, project, f"label-{label.pk}")
    query = {**filters.as_query(), "page": str(target.page)}
    url = reverse("frontend:review", args=[project.pk]) + "?" + urlencode(query)
    return HttpResponseRedirect(f"{url}#label-{target.label_id}")


@require_POST
@project_page(role="admin")
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
@project_page(role="review")
def quality_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    report = project_quality_report(project=project)
    context = {
        **_tabs(project, role, "quality"),
        "report": report,
        "flagged_users": [a for a in report["annotators"] if a["flagged"]],
        "diversity": _diversity_table(report["reward_monitor"]["diversity"]),
        "skip_reasons": skip_reason_counts(project=project),
        "gain": strategy_gain_report(project),
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
@project_page(role="admin")
def quality_pause_flagged(
    request: HttpRequest, project: Project, role: str
) -> HttpResponse:
    # The project flag governs automatic pausing; this button is an explicit admin
    # decision, so it applies the pause even when automatic pausing is off.
    project.pause_flagged_annotators = True
    paused = annotators_flag_and_pause(project=project)
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
@project_page(role="review")
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
    archive = None
    if job.status == Job.Status.SUCCEEDED:
        try:
            files = list(export_jobs.export_files(job))
        except DomainError:
            files = []
        archive = export_jobs.export_archive(job)
        files = [f for f in files if archive is None or f[0] != archive[0]]
    return {"job": job, "params": job.params, "files": files, "archive": archive}


@require_http_methods(["GET", "POST"])
@project_page(role="admin")
def exports(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    if request.method == "POST":
        form = ExportForm(request.POST)
        if form.is_valid():
            try:
                job, _created = export_jobs.export_enqueue(
                    project=project, params=form.job_params(), by=request.user
                )
            except DomainError as exc:
                messages.error(request, str(exc))
            else:
                ahead = export_jobs.exports_ahead(job)
                messages.success(
                    request,
                    f"Export job #{job.pk} queued"
                    + (
                        f" behind {ahead} unfinished export{'s' * (ahead > 1)}."
                        if ahead
                        else "."
                    ),
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
@project_page(role="admin")
def export_download(
    request: HttpRequest, project: Project, role: str, job_id: int, filename: str
) -> FileResponse:
    job = get_object_or_404(Job, pk=job_id, project=project, kind=Job.Kind.EXPORT)
    try:
        path = export_jobs.export_file(job, filename)
    except DomainError:
        raise Http404("No such file in this export.") from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
