"""Gold ranking items: marking them (labelapp.services.gold.ranking_item_mark_gold
and the API), scoring annotators' rankings against the gold order
(labelapp.selectors.quality.ranking_gold_agreement, shown on the quality page)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labelapp.errors import PermissionDenied, ValidationFailed
from labelapp.models import Label, RankingItem
from labelapp.queue.rankings import ranking_item_lease_for
from labelapp.selectors.quality import annotator_stats, ranking_gold_agreement
from labelapp.services.content import prompt_create, response_create
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.rankings import ranking_item_create, ranking_submit

from ..conftest import make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return make_project(overlap=3)


def make_item(project, tag="") -> RankingItem:
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": f"rank these {tag}"}]
    )
    ids = [
        response_create(prompt=prompt, text=f"answer {i} {tag}").pk for i in range(3)
    ]
    return ranking_item_create(project=project, prompt_id=prompt.pk, response_ids=ids)


@pytest.fixture
def item(project):
    return make_item(project)


def test_mark_and_unmark(project, item):
    a, b, c = item.response_ids
    admin = make_user(project=project, role="admin")
    gold = ranking_item_mark_gold(item=item, tiers=[[a], [b, c]], by=admin)
    assert (gold.is_gold, gold.gold_tiers) == (True, [[a], [b, c]])
    plain = ranking_item_mark_gold(item=item, tiers=None, by=admin)
    assert (plain.is_gold, plain.gold_tiers) == (False, None)


@pytest.mark.parametrize(
    "tiers",
    [[], [[10**9]], "a", [["x"]], [[True]], [[0, 0]], [[]], {"a": 1}],
)
def test_bad_gold_orders_are_refused(project, item, tiers):
    with pytest.raises(ValidationFailed, match="tiers"):
        ranking_item_mark_gold(item=item, tiers=tiers, by=None)
    item.refresh_from_db()
    assert not item.is_gold


def test_a_repeated_response_is_refused(project, item):
    a, b, _c = item.response_ids
    with pytest.raises(ValidationFailed, match="ranked twice"):
        ranking_item_mark_gold(item=item, tiers=[[a], [b, a]], by=None)


def test_only_admins_mark_gold(project, item):
    for user in (
        make_user(project=project),
        make_user(project=project, role="reviewer"),
        make_user(project=make_project(), role="admin"),
    ):
        with pytest.raises(PermissionDenied):
            ranking_item_mark_gold(item=item, tiers=[[item.response_ids[0]]], by=user)
    staff = make_user(staff=True)
    assert ranking_item_mark_gold(
        item=item, tiers=[[item.response_ids[0]]], by=staff
    ).is_gold


def test_rankings_are_scored_pair_by_pair_against_the_gold_order(project):
    gold = make_item(project, "gold")
    plain = make_item(project, "plain")
    a, b, c = gold.response_ids
    ranking_item_mark_gold(item=gold, tiers=[[a], [b], [c]], by=None)
    right, wrong, partial = (make_user(project=project) for _ in range(3))
    ranking_submit(item=gold, annotator=right, tiers=[[a], [b], [c]])
    ranking_submit(item=gold, annotator=wrong, tiers=[[c], [b], [a]])
    # Top-1: a over b and a over c are right; b vs c is unordered, a miss.
    ranking_submit(item=gold, annotator=partial, tiers=[[a]])
    # A ranking of a non-gold item does not count.
    ranking_submit(item=plain, annotator=wrong, tiers=[plain.response_ids])
    scores = ranking_gold_agreement(project=project)
    assert scores[right.pk] == {"items": 1, "pairs": 3, "correct": 3, "accuracy": 1.0}
    assert scores[wrong.pk] == {"items": 1, "pairs": 3, "correct": 0, "accuracy": 0.0}
    assert scores[partial.pk]["correct"] == 2
    assert scores[partial.pk]["accuracy"] == pytest.approx(2 / 3)
    stats = {s["user_id"]: s for s in annotator_stats(project=project)}
    assert stats[right.pk]["ranking_gold"]["accuracy"] == 1.0
    # Pairwise gold accuracy is not touched: the implied comparisons are not gold.
    assert stats[right.pk]["gold"] == {"n": 0, "correct": 0, "accuracy": None}
    # A gold item's rankings train like any other (as pairwise gold labels do).
    assert Label.objects.filter(ranking__item=gold).count() == 3 + 3 + 2


def test_quality_page_shows_ranking_gold(project):
    gold = make_item(project, "gold")
    a, b, c = gold.response_ids
    ranking_item_mark_gold(item=gold, tiers=[[a], [b], [c]], by=None)
    ranking_submit(
        item=gold, annotator=make_user("ranker", project=project), tiers=[[a]]
    )
    client = Client()
    client.force_login(make_user(project=project, role="reviewer"))
    page = client.get(reverse("frontend:quality", args=[project.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Ranking gold" in html and "(2/3 pairs)" in html


def test_the_annotator_is_never_told_an_item_is_gold(project, item, api_client_for):
    ranking_item_mark_gold(item=item, tiers=[[item.response_ids[0]]], by=None)
    project.gold_rate = 1.0
    project.save()
    me = make_user(project=project)
    resp = api_client_for(me).post(f"/api/v1/projects/{project.pk}/ranking-next/")
    assert resp.status_code == 200 and resp.json()["id"] == item.pk
    assert "gold" not in str(resp.json())
    assert ranking_item_lease_for(annotator=me, project_id=project.pk).item.is_gold


# --- API ---------------------------------------------------------------------------


def gold_url(item) -> str:
    return f"/api/v1/ranking-items/{item.pk}/gold/"


def test_api_marks_gold_for_admins(project, item, api_client_for):
    a, b, _c = item.response_ids
    admin = api_client_for(make_user(project=project, role="admin"))
    resp = admin.post(gold_url(item), {"tiers": [[b], [a]]}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"id": item.pk, "is_gold": True, "gold_tiers": [[b], [a]]}
    resp = admin.post(gold_url(item), {"tiers": None}, format="json")
    assert resp.json() == {"id": item.pk, "is_gold": False, "gold_tiers": None}
    reviewer = api_client_for(make_user(project=project, role="reviewer"))
    assert (
        reviewer.post(gold_url(item), {"tiers": [[a]]}, format="json").status_code
        == 403
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tiers": [[10**9]]},
        {"tiers": [[2**70]]},
        {"tiers": "[[1]]x"},
        {"tiers": [["1"]]},
        {"tiers": []},
        {"tiers": [[1.5]]},
        {"tiers": [[{"id": 1}]]},
        {"tiers": [["\u0000"]]},
    ],
)
def test_api_bad_gold_input_is_400(project, item, api_client_for, body):
    admin = api_client_for(make_user(project=project, role="admin"))
    resp = admin.post(gold_url(item), body, format="json")
    assert resp.status_code == 400, resp.content
    item.refresh_from_db()
    assert not item.is_gold


def test_api_skip_bad_reason_is_400_and_unknown_item_404(project, item, api_client_for):
    client = api_client_for(make_user(project=project))
    skip = f"/api/v1/ranking-items/{item.pk}/skip/"
    assert client.post(skip, {"reason": "x" * 201}, format="json").status_code == 400
    assert client.post(skip, {"reason": ["x"]}, format="json").status_code == 400
    assert (
        client.post(
            "/api/v1/ranking-items/99999999/skip/", {}, format="json"
        ).status_code
        == 404
    )
    assert client.post(skip, {}, format="json").status_code == 200
