"""Reviewing a ranking as a whole (labelapp.services.reviews.ranking_review) and
over the API: its implied labels follow, the aggregates are refreshed, only the
project's reviewers may, a reviewed ranking is final for its annotator."""

from __future__ import annotations

import pytest

from labelapp.errors import PermissionDenied, ValidationFailed
from labelapp.models import Comparison, Label, Ranking, RankingItem
from labelapp.services.content import prompt_create, response_create
from labelapp.services.rankings import ranking_item_create, ranking_submit
from labelapp.services.reviews import ranking_review

from ..conftest import make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return make_project(overlap=2)


@pytest.fixture
def item(project) -> RankingItem:
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": "rank these"}]
    )
    ids = [response_create(prompt=prompt, text=f"answer {i}").pk for i in range(3)]
    return ranking_item_create(project=project, prompt_id=prompt.pk, response_ids=ids)


def _rank(item, user, tiers=None) -> Ranking:
    ids = item.response_ids
    return ranking_submit(
        item=item, annotator=user, tiers=tiers or [[ids[0]], [ids[1]], [ids[2]]]
    )


def url(ranking_id, action="review") -> str:
    return f"/api/v1/rankings/{ranking_id}/{action + '/' if action else ''}"


def test_accept_reviews_the_ranking_and_every_implied_label(project, item):
    annotator = make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    ranking = _rank(item, annotator)
    reviewed = ranking_review(
        ranking=ranking, reviewer=reviewer, state="accepted", note="Good."
    )
    assert (reviewed.review_state, reviewed.review_note) == ("accepted", "Good.")
    assert reviewed.reviewed_by_id == reviewer.pk and reviewed.reviewed_at
    labels = Label.objects.filter(ranking=ranking)
    assert labels.count() == 3
    assert set(labels.values_list("review_state", "review_note", "reviewed_by")) == {
        ("accepted", "Good.", reviewer.pk)
    }


def test_reject_takes_the_labels_out_of_the_aggregates(project, item):
    first, second = make_user(project=project), make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    ids = item.response_ids
    kept = _rank(item, first)  # 0 > 1 > 2
    bad = _rank(item, second, [[ids[2]], [ids[1]], [ids[0]]])  # the reverse
    pair = Comparison.objects.get(response_a_id=ids[0], response_b_id=ids[1])
    assert pair.p_a == 0.5
    ranking_review(ranking=bad, reviewer=reviewer, state="rejected")
    pair.refresh_from_db()
    assert pair.p_a == 1.0  # only the kept ranking's preference is left
    assert set(
        Label.objects.filter(ranking=bad).values_list("review_state", flat=True)
    ) == {"rejected"}
    assert set(
        Label.objects.filter(ranking=kept).values_list("review_state", flat=True)
    ) == {"pending"}
    # A rejected ranking keeps its slot: the item is not reopened.
    item.refresh_from_db()
    assert (item.labels_count, item.status) == (2, RankingItem.Status.COMPLETE)
    # And back: accepting it puts its labels into the aggregate again.
    ranking_review(ranking=bad, reviewer=reviewer, state="accepted")
    pair.refresh_from_db()
    assert pair.p_a == 0.5


def test_a_pairwise_label_the_ranking_did_not_overwrite_is_not_reviewed(project, item):
    annotator = make_user(project=project)
    ids = item.response_ids
    pairwise = Comparison.objects.create(
        project=project,
        prompt=item.prompt,
        response_a_id=ids[0],
        response_b_id=ids[1],
        labels_required=2,
    )
    own = Label.objects.create(
        comparison=pairwise, annotator=annotator, choice="b", p_a=0.0
    )
    ranking = _rank(item, annotator)
    assert Label.objects.filter(ranking=ranking).count() == 2  # (0, 1) stood
    ranking_review(
        ranking=ranking,
        reviewer=make_user(project=project, role="reviewer"),
        state="rejected",
    )
    own.refresh_from_db()
    assert own.review_state == "pending"


def test_only_the_projects_reviewers_and_not_on_their_own(project, item):
    reviewer = make_user(project=project, role="reviewer")
    ranking = _rank(item, make_user(project=project))
    for user in (
        make_user(project=project),  # an annotator
        make_user(project=make_project(), role="reviewer"),  # another project's
    ):
        with pytest.raises(PermissionDenied):
            ranking_review(ranking=ranking, reviewer=user, state="accepted")
    own = _rank(item, reviewer)
    with pytest.raises(PermissionDenied, match="own ranking"):
        ranking_review(ranking=own, reviewer=reviewer, state="accepted")
    # Staff fix data: they may review even their own (as for labels).
    assert (
        ranking_review(
            ranking=ranking, reviewer=make_user(staff=True), state="accepted"
        ).review_state
        == "accepted"
    )
    with pytest.raises(ValidationFailed, match="state"):
        ranking_review(ranking=ranking, reviewer=reviewer, state="pending")


# --- API ---------------------------------------------------------------------------


def test_api_review_and_its_permissions(project, item, api_client_for):
    annotator = make_user(project=project)
    ranking = _rank(item, annotator)
    reviewer = make_user(project=project, role="reviewer")
    body = {"state": "rejected", "note": "Ignores the prompt."}
    # Annotators (the ranking's own included) and other projects' reviewers
    # cannot see it: 404; anonymous: 403.
    for user in (
        annotator,
        make_user(project=project),
        make_user(project=make_project(), role="reviewer"),
    ):
        resp = api_client_for(user).post(url(ranking.pk), body, format="json")
        assert resp.status_code == 404, resp.content
    assert (
        api_client_for().post(url(ranking.pk), body, format="json").status_code == 403
    )
    resp = api_client_for(reviewer).post(url(ranking.pk), body, format="json")
    assert resp.status_code == 200, resp.content
    data = resp.json()
    assert (data["id"], data["review_state"], data["review_note"]) == (
        ranking.pk,
        "rejected",
        "Ignores the prompt.",
    )
    assert data["project"] == project.pk and data["tiers"] == ranking.tiers
    listed = api_client_for(reviewer).get(
        f"/api/v1/rankings/?project={project.pk}&review_state=rejected"
    )
    assert [r["id"] for r in listed.json()["results"]] == [ranking.pk]
    # A reviewer's own ranking: they see it, but may not review it (403).
    own = _rank(item, reviewer)
    resp = api_client_for(reviewer).post(url(own.pk), body, format="json")
    assert resp.status_code == 403
    # A reviewed ranking is final for its annotator: re-ranking it is a 409.
    resp = api_client_for(annotator).post(
        f"/api/v1/ranking-items/{item.pk}/rank/", {"tiers": [[0]]}, format="json"
    )
    assert resp.status_code == 409 and "reviewed" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "state"),
        ({"state": "pending"}, "state"),
        ({"state": "ACCEPTED"}, "state"),
        ({"state": ["accepted"]}, "state"),
        ({"state": "accepted", "note": "x" * 10_001}, "note"),
        ({"state": "accepted", "note": "nul \u0000"}, None),
    ],
)
def test_api_bad_review_input_is_400(project, item, api_client_for, body, field):
    ranking = _rank(item, make_user(project=project))
    client = api_client_for(make_user(project=project, role="reviewer"))
    resp = client.post(url(ranking.pk), body, format="json")
    assert resp.status_code == 400, resp.content
    if field:
        assert field in resp.json()
    assert Ranking.objects.get(pk=ranking.pk).review_state == "pending"


def test_api_unknown_or_malformed_ids_are_404(project, item, api_client_for):
    client = api_client_for(make_user(project=project, role="reviewer"))
    for path in (url(10**12), url(2**70), "/api/v1/rankings/abc/review/"):
        assert (
            client.post(path, {"state": "accepted"}, format="json").status_code == 404
        )
    for query in ("project=abc", "review_state=bogus"):
        assert client.get(f"/api/v1/rankings/?{query}").status_code == 400


def test_an_implied_label_is_reviewed_only_with_its_ranking(project, item):
    """One review path: the pairwise review refuses a ranking's label, bulk accept
    and the pairwise queue pass over it, so a ranking's state and its labels' states
    cannot disagree."""
    from labelapp.errors import Conflict
    from labelapp.selectors.review import (
        ReviewFilters,
        bulk_accept_labels,
        review_queue,
    )
    from labelapp.services.reviews import label_review, labels_bulk_accept

    annotator = make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    ranking = _rank(item, annotator)
    implied = Label.objects.filter(ranking=ranking).first()
    with pytest.raises(Conflict, match=f"implied by ranking {ranking.pk}"):
        label_review(label=implied, reviewer=reviewer, state="rejected")
    filters = ReviewFilters()
    assert not review_queue(project=project, filters=filters).exists()
    picked = bulk_accept_labels(project=project, filters=filters)
    accepted = labels_bulk_accept(
        project_id=project.pk, reviewer=reviewer, labels=picked
    )
    assert accepted == 0
    assert set(
        Label.objects.filter(ranking=ranking).values_list("review_state", flat=True)
    ) == {"pending"}
    # Over the API: 409 naming the ranking to review instead.
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(reviewer)
    response = api.post(
        f"/api/v1/labels/{implied.pk}/review/", {"state": "accepted"}, format="json"
    )
    assert response.status_code == 409
    assert f"/api/v1/rankings/{ranking.pk}/review/" in response.json()["detail"]
