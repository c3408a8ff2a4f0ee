"""The ranking page's next.json: the API's item body plus sanitised HTML (the
compare page's renderer), in the annotator's order; null when nothing is left."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from labelapp.models import RankingAssignment
from labelapp.services.rankings import ranking_submit
from tests.frontend.conftest import client_for
from tests.labelapp.api.test_rankings_api import make_item
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db


def rank_next(client: Any, project: Any) -> Any:
    response = client.post(reverse("frontend:rank-next", args=[project.pk]))
    assert response.status_code == 200, response.content
    return response.json()["item"]


def test_payload_is_the_apis_plus_sanitised_html():
    project = make_project(overlap=1)
    item = make_item(project)
    # Hostile model text and prompt, as the compare page's tests use.
    item.prompt.messages = [
        {"role": "user", "content": "<script>alert(1)</script> *hi*"}
    ]
    item.prompt.save(update_fields=["messages"])
    responses = list(item.prompt.responses.order_by("id"))
    responses[0].text = "<img src=x onerror=alert(1)> **bold**"
    responses[1].text = "[x](javascript:alert(1))"
    for response in responses[:2]:
        response.save(update_fields=["text"])
    user = make_user(project=project)
    client = client_for(user)
    payload = rank_next(client, project)
    api = client.get(f"/api/v1/ranking-items/{item.pk}/").json()
    assert [r["response_id"] for r in payload["responses"]] == [
        r["response_id"] for r in api["responses"]
    ]
    assert [r["text"] for r in payload["responses"]] == [
        r["text"] for r in api["responses"]
    ]
    htmls = [r["html"] for r in payload["responses"]]
    htmls.append(payload["prompt"]["messages"][0]["html"])
    assert "<em>hi</em>" in htmls[-1]
    assert any("<strong>bold</strong>" in h for h in htmls)
    for html in htmls:
        assert "<script" not in html and "<img" not in html and "href" not in html
    ranking_submit(item=item, annotator=user, tiers=[[item.response_ids[0]]])
    assert rank_next(client, project) is None


def test_the_page_links_its_api_and_json():
    project = make_project()
    client = client_for(make_user(project=project))
    page = client.get(reverse("frontend:rank", args=[project.pk])).content.decode()
    assert 'data-rank-url="/api/v1/ranking-items/{id}/rank/"' in page
    assert 'data-skip-url="/api/v1/ranking-items/{id}/skip/"' in page
    assert reverse("frontend:rank-next", args=[project.pk]) in page


def test_next_json_is_post_with_csrf_and_a_get_is_405():
    # It leases, as compare-next does: a GET (prefetchable, linkable) must not.
    project = make_project()
    make_item(project)
    user = make_user(project=project)
    url = reverse("frontend:rank-next", args=[project.pk])
    assert client_for(user).get(url).status_code == 405
    assert not RankingAssignment.objects.exists()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(url).status_code == 403  # no CSRF token
    client.get(reverse("frontend:rank", args=[project.pk]))
    token = client.cookies["csrftoken"].value
    response = client.post(url, headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.json()["item"] is not None
    assert RankingAssignment.objects.count() == 1
