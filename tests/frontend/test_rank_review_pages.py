"""The ranking review page (frontend.views_rank_review): a ranking laid out as its
annotator ordered it, accept / reject through the API's service (the ranking and
its implied labels follow, then the next pending ranking), gold marking for
admins, model text escaped. Who may open which URL: test_page_permissions."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from labelapp.models import Label, Ranking, RankingItem
from labelapp.selectors.rankings import ranking_display_order
from labelapp.services.content import prompt_create, response_create
from labelapp.services.rankings import ranking_item_create, ranking_submit
from tests.frontend.conftest import client_for
from tests.frontend.test_rendering import assert_inert
from tests.frontend.xss_corpus import XSS_PAYLOADS
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db


def make_item(project, texts: list[str], question: str = "Rank these") -> RankingItem:
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": question}]
    )
    ids = [response_create(prompt=prompt, text=t).pk for t in texts]
    return ranking_item_create(project=project, prompt_id=prompt.pk, response_ids=ids)


@pytest.fixture
def world() -> dict[str, Any]:
    project = make_project(overlap=2)
    ann, other = make_user(project=project), make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    admin = make_user(project=project, role="admin")
    first = make_item(project, ["alpha one", "bravo two", "charlie three", "delta"])
    second = make_item(project, ["echo", "foxtrot"], "Second prompt")
    a, b, c, d = first.response_ids
    # Top-2 with a tie: b first, a and c tied second, d unranked.
    r1 = ranking_submit(item=first, annotator=ann, tiers=[[b], [a, c]])
    r2 = ranking_submit(item=second, annotator=other, tiers=[[second.response_ids[1]]])
    r3 = ranking_submit(item=first, annotator=other, tiers=[[a], [b], [c], [d]])
    return {
        "project": project,
        "ann": ann,
        "other": other,
        "reviewer": reviewer,
        "admin": admin,
        "items": (first, second),
        "rankings": (r1, r2, r3),
    }


def detail_url(project, ranking, query: str = "") -> str:
    url = reverse("frontend:rank-review-detail", args=[project.pk, ranking.pk])
    return f"{url}?{query}" if query else url


def decide(client, project, ranking, state: str, **extra: str):
    return client.post(
        reverse("frontend:rank-review-decide", args=[project.pk, ranking.pk]),
        {"state": state, **extra},
    )


def test_the_list_shows_pending_rankings_with_filters(world):
    project, (r1, r2, r3) = world["project"], world["rankings"]
    client = client_for(world["reviewer"])
    url = reverse("frontend:rank-review", args=[project.pk])
    page = client.get(url).content.decode()
    for r in (r1, r2, r3):
        assert detail_url(project, r) in page
    assert "3 pending of 3 rankings" in page
    only_other = client.get(url, {"annotator": world["other"].pk}).content.decode()
    assert detail_url(project, r1) not in only_other
    assert detail_url(project, r2) in only_other
    # A filtered list's links carry the filter on to the ranking's page.
    assert f"?annotator={world['other'].pk}" in only_other
    decide(client, project, r1, "accepted")
    pending = client.get(url).content.decode()
    assert detail_url(project, r1) not in pending
    accepted = client.get(url, {"review_state": "accepted"}).content.decode()
    assert detail_url(project, r1) in accepted
    assert detail_url(project, r2) not in accepted
    everything = client.get(url, {"review_state": "all"}).content.decode()
    assert all(detail_url(project, r) in everything for r in (r1, r2, r3))


def test_the_page_shows_the_ranking_as_ordered_with_ties_and_unranked(world):
    project, (r1, _r2, _r3) = world["project"], world["rankings"]
    first = world["items"][0]
    a, b, c, d = first.response_ids
    response = client_for(world["reviewer"]).get(detail_url(project, r1))
    assert response.status_code == 200
    tiers = response.context["tiers"]
    assert [[r["id"] for r in t["responses"]] for t in tiers] == [[b], [a, c]]
    assert [t["tie"] for t in tiers] == [False, True]
    assert [r["id"] for r in response.context["unranked"]] == [d]
    page = response.content.decode()
    assert page.index("bravo two") < page.index("alpha one") < page.index("delta")
    assert "tie of 2" in page and "Unranked (1)" in page
    # The position each response was shown to the annotator in (their digit).
    order = ranking_display_order(item=first, annotator_id=world["ann"].pk)
    assert f"shown to them as {order.index(d) + 1}" in page
    # b over a and c, the a = c tie, and each of them over the unranked d.
    assert "6 implied pairwise labels" in page
    assert Label.objects.filter(ranking=r1).count() == 6
    # Reviewers see no gold form; admins do.
    assert 'name="action" value="mark"' not in page
    admin_page = client_for(world["admin"]).get(detail_url(project, r1))
    assert 'name="action" value="mark"' in admin_page.content.decode()


def test_accept_and_reject_review_the_ranking_and_move_to_the_next(world):
    project, (r1, r2, r3) = world["project"], world["rankings"]
    client = client_for(world["reviewer"])
    response = decide(client, project, r1, "accepted", note="Fine.")
    assert response.status_code == 302
    assert response["Location"] == detail_url(project, r2)
    page = client.get(response["Location"]).content.decode()
    assert f"Ranking {r1.pk} accepted." in page  # the flash, on the next one
    assert "Second prompt" in page
    r1.refresh_from_db()
    assert (r1.review_state, r1.review_note) == ("accepted", "Fine.")
    assert set(
        Label.objects.filter(ranking=r1).values_list("review_state", flat=True)
    ) == {"accepted"}
    response = decide(client, project, r2, "rejected")
    assert response["Location"] == detail_url(project, r3)
    r2.refresh_from_db()
    assert r2.review_state == "rejected"
    assert set(
        Label.objects.filter(ranking=r2).values_list("review_state", flat=True)
    ) == {"rejected"}
    # The last pending one: back to the (pending) list, which says so.
    response = decide(client, project, r3, "accepted")
    assert response["Location"] == reverse("frontend:rank-review", args=[project.pk])
    assert (
        "No pending ranking left." in client.get(response["Location"]).content.decode()
    )
    # Nothing else was touched by the reviews.
    assert Ranking.objects.filter(review_state="pending").count() == 0


def test_next_keeps_the_annotator_filter_and_wraps_round(world):
    project, (r1, r2, r3) = world["project"], world["rankings"]
    other = world["other"].pk
    client = client_for(world["reviewer"])
    # Deciding r3 (other's later one) first: the next pending of other's is r2,
    # before it in the queue; r1 (ann's) is not within the filter.
    response = decide(client, project, r3, "accepted", annotator=str(other))
    assert response["Location"] == detail_url(project, r2, f"annotator={other}")
    response = decide(client, project, r2, "accepted", annotator=str(other))
    assert response["Location"] == (
        reverse("frontend:rank-review", args=[project.pk]) + f"?annotator={other}"
    )
    r1.refresh_from_db()
    assert r1.review_state == "pending"


def test_a_reviewers_own_ranking_is_skipped_and_refused(world):
    project = world["project"]
    reviewer = world["reviewer"]
    _first, second = world["items"]
    r1, r2, r3 = world["rankings"]
    own = ranking_submit(
        item=second, annotator=reviewer, tiers=[[second.response_ids[0]]]
    )
    client = client_for(reviewer)
    page = client.get(detail_url(project, own)).content.decode()
    assert 'id="own-ranking"' in page and 'id="review-form"' not in page
    response = decide(client, project, own, "accepted")
    assert response["Location"] == detail_url(project, own)
    own.refresh_from_db()
    assert own.review_state == "pending"
    # Their own ranking, the last in the queue, is never offered as the next.
    decide(client, project, r1, "accepted")
    decide(client, project, r2, "accepted")
    response = decide(client, project, r3, "accepted")
    assert response["Location"] == reverse("frontend:rank-review", args=[project.pk])


def test_a_bad_state_changes_nothing(world):
    project, (r1, _r2, _r3) = world["project"], world["rankings"]
    response = decide(client_for(world["reviewer"]), project, r1, "maybe")
    assert response["Location"] == detail_url(project, r1)
    r1.refresh_from_db()
    assert r1.review_state == "pending"


def test_a_ranking_of_another_project_is_404(world):
    elsewhere = make_project()
    item = make_item(elsewhere, ["x", "y"])
    stranger = ranking_submit(
        item=item,
        annotator=make_user(project=elsewhere),
        tiers=[[item.response_ids[0]]],
    )
    client = client_for(world["reviewer"])
    assert client.get(detail_url(world["project"], stranger)).status_code == 404
    assert decide(client, world["project"], stranger, "accepted").status_code == 404
    stranger.refresh_from_db()
    assert stranger.review_state == "pending"


def gold(client, project, ranking, action: str):
    return client.post(
        reverse("frontend:rank-review-gold", args=[project.pk, ranking.pk]),
        {"action": action},
    )


def test_admins_make_a_ranking_the_gold_order_and_unmark_it(world):
    project, (r1, _r2, _r3) = world["project"], world["rankings"]
    first = world["items"][0]
    client = client_for(world["admin"])
    response = gold(client, project, r1, "mark")
    assert response.status_code == 302
    assert response["Location"] == detail_url(project, r1) + "#gold"
    first.refresh_from_db()
    assert first.is_gold and first.gold_tiers == r1.tiers
    page = client.get(detail_url(project, r1)).content.decode()
    assert "this is its gold order" in page
    assert 'name="action" value="unmark"' in page
    assert 'name="action" value="mark"' not in page  # it already is
    gold(client, project, r1, "unmark")
    first.refresh_from_db()
    assert not first.is_gold and first.gold_tiers is None
    assert gold(client, project, r1, "bogus").status_code == 302
    first.refresh_from_db()
    assert not first.is_gold


def test_reviewers_may_not_mark_gold(world):
    project, (r1, _r2, _r3) = world["project"], world["rankings"]
    assert gold(client_for(world["reviewer"]), project, r1, "mark").status_code == 403
    first = world["items"][0]
    first.refresh_from_db()
    assert not first.is_gold


@pytest.mark.parametrize("payload", [p for p in XSS_PAYLOADS if "<" in p][:8])
def test_model_text_is_escaped(payload):
    project = make_project()
    ann = make_user(project=project)
    item = make_item(project, [payload, f"safe {payload}", "plain"], question=payload)
    ranking = ranking_submit(
        item=item, annotator=ann, tiers=[[item.response_ids[0], item.response_ids[1]]]
    )
    reviewer = make_user(project=project, role="reviewer")
    detail = client_for(reviewer).get(detail_url(project, ranking)).content.decode()
    listing = client_for(reviewer).get(
        reverse("frontend:rank-review", args=[project.pk])
    )
    for page in (detail, listing.content.decode()):
        assert payload not in page
        assert "<script>alert" not in page.lower()
    # Every piece of model text (prompt and the three responses) went through the
    # sanitiser, whose output is inert (tests/frontend/test_rendering.py).
    blocks = re.findall(r'<div class="md[^"]*">(.*?)</div>', detail, flags=re.S)
    assert len(blocks) == 4
    for block in blocks:
        assert_inert(block)


def test_the_review_page_links_rankings_only_when_there_are_some(world):
    project = world["project"]
    client = client_for(world["reviewer"])
    page = client.get(reverse("frontend:review", args=[project.pk])).content.decode()
    assert "Rankings (3 pending)" in page
    assert reverse("frontend:rank-review", args=[project.pk]) in page
    bare = make_project()
    reviewer = make_user(project=bare, role="reviewer")
    page = client_for(reviewer).get(reverse("frontend:review", args=[bare.pk]))
    assert reverse("frontend:rank-review", args=[bare.pk]) not in page.content.decode()
