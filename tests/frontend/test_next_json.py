"""The page's next.json: the API's next body plus sanitised HTML, and prefetch of a
second lease (exclude)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from labelapp.models import Assignment, Comparison, Project
from labelapp.queue import label_submit
from tests.frontend.conftest import PASSWORD, make_comparison

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_in(client: Client, annotator: Any) -> Client:
    assert client.login(username="ann", password=PASSWORD)
    return client


def next_json(
    client: Client, project: Project, exclude: list[int] | None = None
) -> Any:
    response = client.post(
        reverse("frontend:compare-next", args=[project.pk]),
        {"exclude": exclude or []},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_payload_has_display_order_and_html(
    client_in: Client, project: Project, comparisons: Any
) -> None:
    comparisons(1)
    body = next_json(client_in, project)
    payload = body["assignment"]
    assignment = Assignment.objects.get(pk=payload["assignment_id"])
    comparison = assignment.comparison
    left, right = comparison.response_a, comparison.response_b
    if assignment.swapped:
        left, right = right, left
    assert payload["comparison_id"] == comparison.pk
    assert payload["a"]["response_id"] == left.pk
    assert payload["b"]["response_id"] == right.pk
    assert payload["a"]["text"] == left.text
    assert [m["role"] for m in payload["prompt"]["messages"]] == ["system", "user"]
    assert payload["prompt"]["messages"][1]["html"].startswith("<p>Question 0")
    assert "<code>x</code>" in payload["prompt"]["messages"][1]["html"]
    assert payload["lease_expires_at"]
    assert body["progress"] == {"done_today": 0, "done_total": 0, "remaining": 1}


def test_content_html_is_sanitised(client_in: Client, project: Project) -> None:
    make_comparison(
        project,
        [{"role": "user", "content": "<script>alert(1)</script>"}],
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
    )
    payload = next_json(client_in, project)["assignment"]
    htmls = [payload["a"]["html"], payload["b"]["html"]]
    htmls.append(payload["prompt"]["messages"][0]["html"])
    for html in htmls:
        assert "<script" not in html and "<img" not in html and "href" not in html


def test_same_lease_is_returned_until_labelled(
    client_in: Client, project: Project, comparisons: Any
) -> None:
    comparisons(3)
    first = next_json(client_in, project)["assignment"]
    again = next_json(client_in, project)["assignment"]
    assert again["assignment_id"] == first["assignment_id"]
    assert again["a"] == first["a"]  # same orientation on reload


def test_prefetch_holds_a_second_lease_at_most(
    client_in: Client, annotator: Any, project: Project, comparisons: Any
) -> None:
    comparisons(4)
    first = next_json(client_in, project)["assignment"]["assignment_id"]
    second = next_json(client_in, project, [first])["assignment"]["assignment_id"]
    assert second != first
    # A third lease is refused: the page holds at most two.
    assert next_json(client_in, project, [first, second])["assignment"] is None
    leased = Assignment.objects.filter(annotator=annotator, state="leased")
    assert leased.count() == 2
    # A reload (no exclude) resumes the oldest lease, a prefetch then the other.
    assert next_json(client_in, project)["assignment"]["assignment_id"] == first
    assert next_json(client_in, project, [first])["assignment"]["assignment_id"] == (
        second
    )
    # Once the first is labelled, the prefetch after the second is a new one.
    label_submit(assignment_id=first, annotator=annotator, choice="a", strength=2)
    third = next_json(client_in, project, [second])["assignment"]["assignment_id"]
    assert third not in {first, second}
    comparison_ids = set(
        Assignment.objects.filter(pk__in=[first, second, third]).values_list(
            "comparison_id", flat=True
        )
    )
    assert len(comparison_ids) == 3


def test_nothing_left(client_in: Client, project: Project, comparisons: Any) -> None:
    (only,) = comparisons(1)
    first = next_json(client_in, project)["assignment"]["assignment_id"]
    assert next_json(client_in, project, [first])["assignment"] is None
    Comparison.objects.filter(pk=only.pk).update(status="complete")
    body = next_json(client_in, project, [first])
    assert body["assignment"] is None


@pytest.mark.parametrize(
    "body",
    ['{"exclude": "1"}', '{"exclude": [true]}', "[]", "not json", '{"exclude": ["1"]}'],
)
def test_bad_body_is_400(client_in: Client, project: Project, body: str) -> None:
    response = client_in.post(
        reverse("frontend:compare-next", args=[project.pk]),
        body,
        content_type="application/json",
    )
    assert response.status_code == 400


def test_get_is_not_allowed(client_in: Client, project: Project) -> None:
    # It leases: a GET (prefetchable, linkable) must not.
    response = client_in.get(reverse("frontend:compare-next", args=[project.pk]))
    assert response.status_code == 405


def test_csrf_is_enforced(annotator: Any, project: Project, comparisons: Any) -> None:
    comparisons(1)
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="ann", password=PASSWORD)
    url = reverse("frontend:compare-next", args=[project.pk])
    response = client.post(url, {}, content_type="application/json")
    assert response.status_code == 403
    client.get(reverse("frontend:compare", args=[project.pk]))
    token = client.cookies["csrftoken"].value
    response = client.post(
        url, {}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 200
