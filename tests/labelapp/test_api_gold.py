"""The API obeys the gold rule of services.gold (issue 14 item 6): a gold answer is
a, b or tie, only gold comparisons have one, and refusals are 400s naming the field
(an empty answer on a gold item was a 500 from the database CHECK)."""

from __future__ import annotations

import pytest

from labelapp.models import Comparison, Response, text_hash

from .conftest import make_comparisons, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(project, api_client_for):
    return api_client_for(make_user(project=project, role="admin"))


@pytest.fixture
def plain_and_gold(project):
    plain, gold = make_comparisons(project, 2)
    Comparison.objects.filter(pk=gold.pk).update(is_gold=True, gold_choice="a")
    return plain, gold


def _patch(client, comparison, body):
    return client.patch(f"/api/v1/comparisons/{comparison.pk}/", body, format="json")


def _refused(response, words):
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("gold_choice: ") and words in detail, detail


@pytest.mark.parametrize(
    ("target", "value", "words"),
    [
        ("plain", "a", "only a gold comparison has an answer"),
        ("gold", "both_bad", "cannot be a gold answer"),
        ("gold", "", "needs an answer"),
    ],
)
def test_patch_refuses_what_the_gold_rule_refuses(
    admin_client, plain_and_gold, target, value, words
):
    plain, gold = plain_and_gold
    comparison = plain if target == "plain" else gold
    before = Comparison.objects.values("is_gold", "gold_choice", "priority").get(
        pk=comparison.pk
    )
    _refused(
        _patch(admin_client, comparison, {"gold_choice": value, "priority": 5}), words
    )
    after = Comparison.objects.values("is_gold", "gold_choice", "priority").get(
        pk=comparison.pk
    )
    assert after == before  # nothing written, the other field neither


def test_patch_changes_a_gold_answer_and_leaves_plain_ones_alone(
    admin_client, plain_and_gold
):
    plain, gold = plain_and_gold
    response = _patch(admin_client, gold, {"gold_choice": "tie"})
    assert response.status_code == 200 and response.json()["gold_choice"] == "tie"
    # An empty answer on a comparison that is not gold is what it has already.
    response = _patch(admin_client, plain, {"gold_choice": "", "priority": 2})
    assert response.status_code == 200, response.content
    assert response.json()["priority"] == 2 and response.json()["gold_choice"] == ""


def _pair(project, comparison):
    text = f"third answer {comparison.pk}"
    third = Response.objects.create(
        prompt_id=comparison.prompt_id, text=text, text_hash=text_hash(text)
    )
    return {
        "project": project.pk,
        "response_a": third.pk,
        "response_b": comparison.response_a_id,
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"is_gold": True, "gold_choice": "both_bad"}, "cannot be a gold answer"),
        ({"is_gold": True}, "needs an answer"),
        ({"gold_choice": "a"}, "only a gold comparison has an answer"),
    ],
)
def test_create_refuses_what_the_gold_rule_refuses(
    project, admin_client, plain_and_gold, body, words
):
    plain, _gold = plain_and_gold
    count = Comparison.objects.count()
    response = admin_client.post(
        "/api/v1/comparisons/", {**_pair(project, plain), **body}, format="json"
    )
    _refused(response, words)
    assert Comparison.objects.count() == count
