"""Ranking mode over the API: the next item to rank, an item as shown, and ranking
it (ties, top-k, re-ranking, the k-th slot under concurrency, bad tiers)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from labelapp.models import Comparison, Label, Ranking, RankingAssignment, RankingItem
from labelapp.services.content import prompt_create, response_create
from labelapp.services.rankings import ranking_item_create, ranking_submit
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db

TEXTS = ["alpha answer", "bravo answer", "charlie answer", "delta answer"]


def make_item(project, *, n: int = 4, tag: str = "", k: int | None = None):
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": f"rank me {tag}"}]
    )
    ids = [response_create(prompt=prompt, text=f"{t} {tag}").pk for t in TEXTS[:n]]
    return ranking_item_create(
        project=project, prompt_id=prompt.pk, response_ids=ids, labels_required=k
    )


@pytest.fixture
def project():
    return make_project(overlap=2)


@pytest.fixture
def item(project):
    return make_item(project)


def url(item_id: int, action: str = "") -> str:
    return f"/api/v1/ranking-items/{item_id}/{action + '/' if action else ''}"


def shown_ids(client, item) -> list[int]:
    body = client.get(url(item.pk)).json()
    return [r["response_id"] for r in body["responses"]]


def implied_labels(item, annotator) -> dict[tuple[int, int], float]:
    return {
        (a, b): p
        for a, b, p in Label.objects.filter(
            ranking__item=item, ranking__annotator=annotator
        ).values_list("comparison__response_a_id", "comparison__response_b_id", "p_a")
    }


# --- POST ranking-next --------------------------------------------------------------


def test_next_serves_the_prompt_and_responses_in_a_per_annotator_order(
    project, api_client_for
):
    # k = 6: each of the six annotators is leased a slot (with k = 2 the third
    # would get 204: two live leases hold both slots).
    item = make_item(project, k=6)
    orders = []
    for _ in range(6):
        user = make_user(project=project)
        resp = api_client_for(user).post(f"/api/v1/projects/{project.pk}/ranking-next/")
        assert resp.status_code == 200
        body = resp.json()
        assert body["id"] == item.pk and body["project"] == project.pk
        assert body["prompt"] == {"messages": [{"role": "user", "content": "rank me "}]}
        assert [r["index"] for r in body["responses"]] == [0, 1, 2, 3]
        assert sorted(r["response_id"] for r in body["responses"]) == sorted(
            item.response_ids
        )
        assert body["your_tiers"] is None
        assert body["lease_expires_at"] is not None  # next leased it
        text = str(body)
        for secret in ("labels_count", "labels_required", "reward", "status"):
            assert secret not in text
        # Stable for one annotator (a reload shows the same order).
        assert api_client_for(user).get(url(item.pk)).json() == body
        orders.append(tuple(r["response_id"] for r in body["responses"]))
    assert len(set(orders)) > 1  # shuffled per annotator


def test_next_skips_ranked_and_complete_items_then_204(project, api_client_for):
    started = make_item(project, tag="started")
    fresh = make_item(project, tag="fresh")
    full = make_item(project, tag="full", k=1)
    ranking_submit(
        item=full, annotator=make_user(project=project), tiers=[[full.response_ids[0]]]
    )
    ranking_submit(
        item=started,
        annotator=make_user(project=project),
        tiers=[[started.response_ids[1]]],
    )
    me = make_user(project=project)
    client = api_client_for(me)
    next_url = f"/api/v1/projects/{project.pk}/ranking-next/"
    # The started item first (it completes before a new one is begun), never the
    # complete one.
    assert client.post(next_url).json()["id"] == started.pk
    assert (
        client.post(
            url(started.pk, "rank"), {"tiers": [[0]]}, format="json"
        ).status_code
        == 201
    )
    assert client.post(next_url).json()["id"] == fresh.pk
    assert (
        client.post(
            url(fresh.pk, "rank"), {"tiers": [[2], [0, 1]]}, format="json"
        ).status_code
        == 201
    )
    resp = client.post(next_url)
    assert resp.status_code == 204 and resp.content == b""
    started.refresh_from_db()
    assert started.status == RankingItem.Status.COMPLETE and started.labels_count == 2
    # Another annotator still gets the fresh item (one ranking of its k = 2).
    assert (
        api_client_for(make_user(project=project)).post(next_url).json()["id"]
        == fresh.pk
    )


def test_next_is_post_and_a_get_is_405_and_leases_nothing(project, api_client_for):
    make_item(project)
    client = api_client_for(make_user(project=project))
    next_url = f"/api/v1/projects/{project.pk}/ranking-next/"
    resp = client.get(next_url)
    assert resp.status_code == 405 and resp["Allow"].startswith("POST")
    assert not RankingAssignment.objects.exists()
    assert client.post(next_url).status_code == 200
    assert RankingAssignment.objects.count() == 1


def test_next_is_404_for_non_members_and_204_while_paused(
    project, item, api_client_for
):
    next_url = f"/api/v1/projects/{project.pk}/ranking-next/"
    outsider = make_user(project=make_project())
    assert api_client_for(outsider).post(next_url).status_code == 404
    staff = make_user(staff=True)  # not a member: no queue, as for pairs
    assert api_client_for(staff).post(next_url).status_code == 404
    assert (
        api_client_for(outsider)
        .post("/api/v1/projects/999999/ranking-next/")
        .status_code
        == 404
    )
    paused = make_user(project=project, paused=True)
    assert api_client_for(paused).post(next_url).status_code == 204
    resp = api_client_for(paused).post(
        url(item.pk, "rank"), {"tiers": [[0]]}, format="json"
    )
    assert resp.status_code == 403 and "paused" in resp.json()["detail"]
    assert not Ranking.objects.exists()


# --- GET ranking-items/<id>/ ---------------------------------------------------------


def test_item_detail_is_404_outside_the_project(project, item, api_client_for):
    assert (
        api_client_for(make_user(project=project)).get(url(item.pk)).status_code == 200
    )
    assert api_client_for(make_user(staff=True)).get(url(item.pk)).status_code == 200
    outsider = make_user(project=make_project())
    assert api_client_for(outsider).get(url(item.pk)).status_code == 404
    assert (
        api_client_for(outsider)
        .post(url(item.pk, "rank"), {"tiers": [[0]]}, format="json")
        .status_code
        == 404
    )
    assert api_client_for(outsider).get(url(item.pk + 1000)).status_code == 404
    assert api_client_for().get(url(item.pk)).status_code == 403


# --- POST rank -------------------------------------------------------------------


def test_rank_writes_the_implied_pairs_and_a_rerank_rewrites_them(
    project, item, api_client_for
):
    me = make_user(project=project)
    client = api_client_for(me)
    r = shown_ids(client, item)  # r[i] is the response shown at index i
    # Partial ranking with a tie: index 2 best, 0 and 3 tie second, 1 unranked.
    resp = client.post(
        url(item.pk, "rank"),
        {"tiers": [[2], [0, 3]], "duration_ms": 900},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["item"] == item.pk and body["tiers"] == [[2], [0, 3]]
    assert body["duration_ms"] == 900
    ranking = Ranking.objects.get(item=item, annotator=me)
    assert ranking.tiers == [[r[2]], [r[0], r[3]]]  # stored as response ids

    def canon(winner: int, loser: int, p: float = 1.0) -> tuple[tuple[int, int], float]:
        return ((winner, loser), p) if winner < loser else ((loser, winner), 1 - p)

    # By hand: 2 beats everyone; 0 ~ 3; 0 and 3 beat the unranked 1 (6 pairs).
    assert implied_labels(item, me) == dict(
        [
            canon(r[2], r[0]),
            canon(r[2], r[3]),
            canon(r[2], r[1]),
            canon(r[0], r[3], 0.5),
            canon(r[0], r[1]),
            canon(r[3], r[1]),
        ]
    )
    labels = Label.objects.filter(ranking=ranking)
    assert set(labels.values_list("source", "review_state", "annotator_id")) == {
        ("ranking", "pending", me.pk)
    }
    assert set(
        Comparison.objects.filter(project=project).values_list("origin", "status")
    ) == {("ranking", "complete")}
    assert client.get(url(item.pk)).json()["your_tiers"] == [[2], [0, 3]]

    # Re-rank (top-1 only): 200, the same ranking row, only the new pairs.
    resp = client.post(url(item.pk, "rank"), {"tiers": [[1]]}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["id"] == ranking.pk and resp.json()["tiers"] == [[1]]
    assert implied_labels(item, me) == dict(
        [canon(r[1], r[0]), canon(r[1], r[2]), canon(r[1], r[3])]
    )
    item.refresh_from_db()
    assert item.labels_count == 1 and item.status == RankingItem.Status.OPEN
    # The pair (0, 3) no ranking implies any more is retired, not left complete.
    (pair_03,) = Comparison.objects.filter(
        response_a_id=min(r[0], r[3]), response_b_id=max(r[0], r[3])
    )
    assert pair_03.status == Comparison.Status.RETIRED


def test_the_api_writes_the_same_labels_as_the_importers_service(
    project, api_client_for
):
    """Two items with the same texts: one ranked over the API, one through
    ranking_submit (the importer's path) with the same order in ids."""
    by_api, by_service = make_item(project, tag="x"), make_item(project, tag="y")
    me = make_user(project=project)
    client = api_client_for(me)
    assert (
        client.post(
            url(by_api.pk, "rank"), {"tiers": [[3], [1]]}, format="json"
        ).status_code
        == 201
    )
    order = shown_ids(client, by_api)
    tiers_by_text = [
        [TEXTS[by_api.response_ids.index(order[3])]],
        [TEXTS[by_api.response_ids.index(order[1])]],
    ]
    ids_y = by_service.response_ids
    ranking_submit(
        item=by_service,
        annotator=me,
        tiers=[[ids_y[TEXTS.index(t)] for t in tier] for tier in tiers_by_text],
    )

    def by_texts(item) -> dict:
        out = {}
        for a, b, p, choice in Label.objects.filter(ranking__item=item).values_list(
            "comparison__response_a__text",
            "comparison__response_b__text",
            "p_a",
            "choice",
        ):
            out[(a.split()[0], b.split()[0])] = (p, choice)
        return out

    assert by_texts(by_api) == by_texts(by_service)
    assert len(by_texts(by_api)) == 5  # top-2 of 4: 1 + 2·2 pairs


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([[0], [1, 0]], "0 is ranked twice (again in tier 1)"),
        ([[0], [4]], "tier 1 holds 4, which is not one of the responses (0..3)"),
        ([[-1]], "tier 0 holds -1, which is not one of the responses (0..3)"),
        ([[0], []], "tier 1 is empty"),
        ([], "the ranking ranks nothing (an empty list)"),
        ([0, 1], "tier 0 must be a list of response indexes (e.g. [0]), got int 0"),
        ([[1], [True]], "tier 1 holds True (a boolean), which is not a response index"),
        ([[1.0]], "tier 0 holds 1.0 (a number), which is not a response index"),
        ([["1"]], "tier 0 holds '1' (a string), which is not a response index"),
        ([[2**70]], f"tier 0 holds {2**70}, which is not one of the responses"),
        ([[[0]]], "tier 0 holds [0] (list), which is not a response index"),
        ([[0]] * 10, "0 is ranked twice (again in tier 1)"),
        ([[None]], "tier 0 holds None (null), which is not a response index"),
        # The JSON parser's own refusal, before the field sees it.
        ([["\u0000"]], "NUL characters (\\u0000) are not allowed (at tiers[0][0])"),
        ({"0": [1]}, "expected a list of tiers, got an object"),
        ("[[0]]", "expected a list of tiers, got a string"),
    ],
)
def test_bad_tiers_are_400_naming_the_tier_and_value(
    project, item, api_client_for, tiers, message
):
    client = api_client_for(make_user(project=project))
    resp = client.post(url(item.pk, "rank"), {"tiers": tiers}, format="json")
    assert resp.status_code == 400, resp.content
    errors = resp.json()
    assert message in (errors["tiers"][0] if "tiers" in errors else errors["detail"])
    assert not Ranking.objects.exists() and not Label.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "tiers"),
        ({"tiers": None}, "tiers"),
        ({"tiers": [[0]], "duration_ms": -1}, "duration_ms"),
        ({"tiers": [[0]], "duration_ms": "soon"}, "duration_ms"),
        ({"tiers": [[0]], "duration_ms": 2**70}, "duration_ms"),
        ([[0]], "non_field_errors"),
    ],
)
def test_missing_or_malformed_fields_are_400(
    project, item, api_client_for, body, field
):
    client = api_client_for(make_user(project=project))
    resp = client.post(url(item.pk, "rank"), body, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json()
    assert not Ranking.objects.exists()


def test_a_form_body_works_like_json(project, item, api_client_for):
    client = api_client_for(make_user(project=project))
    resp = client.post(url(item.pk, "rank"), {"tiers": "[[1], [0, 2]]"})
    assert resp.status_code == 201, resp.content
    assert resp.json()["tiers"] == [[1], [0, 2]]


def test_a_two_response_item_names_its_range(project, api_client_for):
    small = make_item(project, n=2, tag="small")
    client = api_client_for(make_user(project=project))
    resp = client.post(url(small.pk, "rank"), {"tiers": [[2]]}, format="json")
    assert resp.json() == {
        "tiers": ["tier 0 holds 2, which is not one of the responses (0, 1)"]
    }


def test_409_once_the_item_has_k_rankings_from_others(project, item, api_client_for):
    first, second, late = (make_user(project=project) for _ in range(3))
    for user in (first, second):
        resp = api_client_for(user).post(
            url(item.pk, "rank"), {"tiers": [[0]]}, format="json"
        )
        assert resp.status_code == 201
    resp = api_client_for(late).post(
        url(item.pk, "rank"), {"tiers": [[0]]}, format="json"
    )
    assert (
        resp.status_code == 409
        and "already has the 2 ranking(s)" in resp.json()["detail"]
    )
    assert not Ranking.objects.filter(annotator=late).exists()
    # Those who ranked it may still change their ranking (200, the count stays k).
    resp = api_client_for(first).post(
        url(item.pk, "rank"), {"tiers": [[3], [1]]}, format="json"
    )
    assert resp.status_code == 200
    item.refresh_from_db()
    assert (item.labels_count, item.status) == (2, RankingItem.Status.COMPLETE)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_five_annotators_racing_for_k_2_get_two_201_and_three_409(api_client_for):
    project = make_project(overlap=2)
    item = make_item(project)
    users = [make_user(project=project) for _ in range(5)]
    clients = [api_client_for(u) for u in users]
    start = threading.Barrier(len(users))
    codes: list[int] = []
    errors: list[BaseException] = []

    def work(client) -> None:
        try:
            start.wait()
            resp = client.post(
                url(item.pk, "rank"), {"tiers": [[1], [0]]}, format="json"
            )
            codes.append(resp.status_code)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert Counter(codes) == {201: 2, 409: 3}
    item.refresh_from_db()
    assert item.labels_count == 2 and item.status == RankingItem.Status.COMPLETE
    assert Ranking.objects.filter(item=item).count() == 2
    # Each of the two rankings implies 5 pairs (top-2 of 4), one label each.
    assert Label.objects.filter(ranking__item=item).count() == 10
