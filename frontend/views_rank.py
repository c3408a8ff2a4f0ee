"""The ranking page: a prompt and its K responses, put in tiers from the keyboard.
The page reads the next item here (with server-rendered, sanitised html, as the
compare page does) and posts the ranking straight to the REST API."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from frontend.guards import project_page
from frontend.rendering import render_markdown
from frontend.views import _json_login_required
from labelapp.api.serializers import RankingItemSerializer
from labelapp.errors import DomainError
from labelapp.models import Project, RankingItem
from labelapp.queue.rankings import ranking_item_lease_for
from labelapp.selectors.rankings import ranking_item_payload


def payload_with_html(item: RankingItem, user: Any) -> dict[str, Any]:
    """The API's item body (same selector and serializer, responses in this
    annotator's order) plus ``html`` beside every raw text, rendered and sanitised
    by the server exactly like the compare page's."""
    payload = dict(
        RankingItemSerializer(ranking_item_payload(item=item, user=user)).data
    )
    for message in payload["prompt"]["messages"]:
        message["html"] = render_markdown(message["content"])
    payload["responses"] = [
        {**response, "html": render_markdown(response["text"])}
        for response in payload["responses"]
    ]
    return payload


@project_page(role="annotate")
@require_GET
def rank(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    context = {
        "project": project,
        "guidelines_html": render_markdown(project.guidelines),
        "rank_url_template": reverse("api:rankingitem-rank", kwargs={"pk": 0}).replace(
            "/0/", "/{id}/"
        ),
        "skip_url_template": reverse("api:rankingitem-skip", kwargs={"pk": 0}).replace(
            "/0/", "/{id}/"
        ),
    }
    return render(request, "frontend/rank.html", context)


@_json_login_required  # a script gets a 401 it can act on, as compare-next's
@require_POST
@project_page(role="annotate")
def rank_next(request: HttpRequest, project: Project, role: str) -> JsonResponse:
    """``{"item": payload | null}``: the next item to rank, leased to the
    annotator (null when none, or the membership is paused); always 200 so the page
    tells "none" from an error. POST, as compare-next and the API's ranking-next
    are: it writes a lease. A reload asks again and gets the same lease back."""
    try:
        lease = ranking_item_lease_for(annotator=request.user, project_id=project.pk)
    except DomainError as exc:
        return JsonResponse(
            {"detail": str(exc), "code": exc.code}, status=exc.http_status
        )
    return JsonResponse(
        {"item": payload_with_html(lease.item, request.user) if lease else None}
    )
