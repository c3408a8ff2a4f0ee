"""The ranking review page (issue 18 item 4): reviewers list a project's rankings
and accept or reject one as a whole (labelapp.services.reviews.ranking_review,
the service behind ``POST rankings/<id>/review/``), then move on to the next
pending one; admins make the ranking they look at the item's gold order, or
unmark it (labelapp.services.gold.ranking_item_mark_gold, behind ``POST
ranking-items/<id>/gold/``). Reads come from labelapp.selectors.ranking_review.

Access: ``frontend.guards.project_page`` (review pages: reviewers, admins, staff;
gold: admins), the rule the API's ``rankings_for`` applies.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from frontend.forms import RankingGoldForm, ReviewForm
from frontend.guards import project_page
from frontend.rendering import render_markdown
from labelapp import access
from labelapp.errors import DomainError
from labelapp.models import Project, Ranking
from labelapp.selectors.ranking_review import (
    STATES,
    RankingReviewFilters,
    ranking_next_pending,
    ranking_review_annotators,
    ranking_review_counts,
    ranking_review_detail,
    ranking_review_queue,
)
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.reviews import REVIEW_NOTE_MAX_CHARS, ranking_review

PAGE_SIZE = 50


def _tabs(project: Project, role: str) -> dict[str, Any]:
    return {
        "project": project,
        "active_tab": "review",
        "can_admin": access.role_allows(role=role, action="admin"),
    }


def _ranking(project: Project, ranking_id: int) -> Ranking:
    return get_object_or_404(
        Ranking.objects.select_related("item", "item__prompt", "annotator"),
        pk=ranking_id,
        item__project=project,
    )


def _url(name: str, project: Project, filters: RankingReviewFilters, *args) -> str:
    url = reverse(f"frontend:{name}", args=[project.pk, *args])
    query = filters.as_query()
    return f"{url}?{urlencode(query)}" if query else url


def _own_excluded(request: HttpRequest) -> int | None:
    return None if access.can_review_own_label(user=request.user) else request.user.pk


@require_GET
@project_page(role="review")
def rank_review_list(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    filters = RankingReviewFilters.from_query(request.GET)
    page = Paginator(
        ranking_review_queue(project=project, filters=filters), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    context = {
        **_tabs(project, role),
        "page": page,
        "filters": filters,
        "filter_query": urlencode(filters.as_query()),
        "annotators": ranking_review_annotators(project=project),
        "states": STATES,
        "counts": ranking_review_counts(project=project),
    }
    return render(request, "frontend/rank_review_list.html", context)


def _html(detail: dict[str, Any]) -> dict[str, Any]:
    """Model text rendered and sanitised by the server, as on every other page."""
    for group in [*detail["tiers"], *(detail["gold_tiers"] or [])]:
        for response in group["responses"]:
            response.setdefault("html", render_markdown(response["text"]))
    for response in detail["unranked"]:
        response.setdefault("html", render_markdown(response["text"]))
    # Not "messages": that is the messages framework's flash list in templates.
    detail["prompt_messages"] = [
        {"role": m.get("role", ""), "html": render_markdown(str(m.get("content", "")))}
        for m in detail["prompt_messages"]
    ]
    return detail


@require_GET
@project_page(role="review")
def rank_review_detail(
    request: HttpRequest, project: Project, role: str, ranking_id: int
) -> HttpResponse:
    filters = RankingReviewFilters.from_query(request.GET)
    ranking = _ranking(project, ranking_id)
    context = {
        **_tabs(project, role),
        **_html(ranking_review_detail(ranking=ranking)),
        "filters": filters,
        "list_url": _url("rank-review", project, filters),
        "own": ranking.annotator_id == _own_excluded(request),
        "note_max_chars": REVIEW_NOTE_MAX_CHARS,
        "counts": ranking_review_counts(project=project),
    }
    return render(request, "frontend/rank_review.html", context)


@require_POST
@project_page(role="review")
def rank_review_decide(
    request: HttpRequest, project: Project, role: str, ranking_id: int
) -> HttpResponse:
    """Accept or reject the ranking (and every label it implies), then on to the
    next pending ranking within the filters the page was opened with; nothing
    left pending: the list."""
    filters = RankingReviewFilters.from_query(request.POST)
    ranking = _ranking(project, ranking_id)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Ranking {ranking.pk}: {form.errors.as_text()}")
        return HttpResponseRedirect(
            _url("rank-review-detail", project, filters, ranking.pk)
        )
    state = form.cleaned_data["state"]
    try:
        ranking_review(
            ranking=ranking,
            reviewer=request.user,
            state=state,
            note=form.cleaned_data["note"],
        )
    except DomainError as exc:
        messages.error(request, f"Ranking {ranking.pk}: {exc}")
        return HttpResponseRedirect(
            _url("rank-review-detail", project, filters, ranking.pk)
        )
    messages.success(request, f"Ranking {ranking.pk} {state}.")
    target = ranking_next_pending(
        project=project,
        filters=filters,
        after=ranking,
        exclude_annotator=_own_excluded(request),
    )
    if target is None:
        messages.info(request, "No pending ranking left.")
        return HttpResponseRedirect(_url("rank-review", project, filters))
    return HttpResponseRedirect(_url("rank-review-detail", project, filters, target.pk))


@require_POST
@project_page(role="admin")
def rank_review_gold(
    request: HttpRequest, project: Project, role: str, ranking_id: int
) -> HttpResponse:
    """Make this ranking's order the item's gold order, or unmark the item."""
    filters = RankingReviewFilters.from_query(request.POST)
    ranking = _ranking(project, ranking_id)
    form = RankingGoldForm(request.POST)
    back = HttpResponseRedirect(
        _url("rank-review-detail", project, filters, ranking.pk) + "#gold"
    )
    if not form.is_valid():
        messages.error(request, f"Gold: {form.errors.as_text()}")
        return back
    mark = form.cleaned_data["action"] == RankingGoldForm.MARK
    try:
        ranking_item_mark_gold(
            item=ranking.item, tiers=ranking.tiers if mark else None, by=request.user
        )
    except DomainError as exc:
        messages.error(request, f"Gold: {exc}")
    else:
        messages.success(
            request,
            f"Ranking item {ranking.item_id} "
            + (
                f"is gold, in ranking {ranking.pk}'s order."
                if mark
                else "is no longer gold."
            ),
        )
    return back
