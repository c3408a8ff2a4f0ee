"""Ranking gold flags annotators by the pairwise rule (labelapp.selectors.quality.
gold_flags): at least gold_min_count gold ranking items ranked with agreement under
gold_min_accuracy. The flag, its reason and each member's ranking-gold agreement are
on the members page, and pausing flagged annotators pauses ranking-flagged ones."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labelapp.models import Membership
from labelapp.queue.rankings import ranking_item_lease_for
from labelapp.selectors import quality
from labelapp.services.annotators import annotators_flag_and_pause
from labelapp.services.content import prompt_create, response_create
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.rankings import ranking_item_create, ranking_submit
from tests.frontend.conftest import client_for
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db


def gold_item(project, tag: str):
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": f"rank {tag}"}]
    )
    ids = [response_create(prompt=prompt, text=f"{tag} {i}").pk for i in range(3)]
    item = ranking_item_create(project=project, prompt_id=prompt.pk, response_ids=ids)
    return ranking_item_mark_gold(item=item, tiers=[[ids[0]], [ids[1]], [ids[2]]], by=None)  # fmt: skip


@pytest.fixture
def world():
    """A bar of 75 % over 2 items; two gold items of 3 responses (3 pairs each).
    "good" ranks both as gold, "bad" both reversed (0 of 6 pairs), "few" one item
    reversed: 3 wrong pairs, over the minimum as pairs, but one item, under it."""
    project = make_project(gold_min_count=2, gold_min_accuracy=0.75, overlap=3)
    items = [gold_item(project, "x"), gold_item(project, "y")]
    users = {n: make_user(n, project=project) for n in ("good", "bad", "few")}
    for item in items:
        right = [[i] for i in item.response_ids]
        ranking_submit(item=item, annotator=users["good"], tiers=right)
        ranking_submit(item=item, annotator=users["bad"], tiers=right[::-1])
    ranking_submit(
        item=items[0],
        annotator=users["few"],
        tiers=[[i] for i in items[0].response_ids[::-1]],
    )
    return project, users


BAD_REASON = "Ranking gold agreement 0% on 2 gold ranking items is below 75%."


def test_ranking_gold_flags_by_the_pairwise_rule_counting_items(world):
    project, users = world
    stats = {s["username"]: s for s in quality.annotator_stats(project=project)}
    assert stats["bad"]["ranking_gold"]["accuracy"] == 0.0
    assert stats["few"]["ranking_gold"] == {
        "items": 1,
        "pairs": 3,
        "correct": 0,
        "accuracy": 0.0,
    }
    assert stats["bad"]["flagged"] and stats["bad"]["flag_reason"] == BAD_REASON
    assert not stats["good"]["flagged"] and stats["good"]["flag_reason"] == ""
    assert not stats["few"]["flagged"]  # one item is not enough evidence
    assert quality.annotators_flagged(project=project) == [users["bad"].pk]
    report = quality.project_quality_report(project=project)
    assert report["flagged"] == [users["bad"].pk]


def test_at_the_bar_is_not_flagged(world):
    project, _users = world
    project.gold_min_accuracy = 0.0  # 0 % is not under 0 %
    project.save()
    assert quality.annotators_flagged(project=project) == []


def test_pausing_flagged_annotators_pauses_ranking_flagged_ones(world):
    project, users = world
    project.pause_flagged_annotators = True
    project.save()
    assert annotators_flag_and_pause(project=project) == [users["bad"].pk]
    member = Membership.objects.get(project=project, user=users["bad"])
    assert member.paused and member.paused_reason == BAD_REASON
    gold_item(project, "z")  # an item bad has not ranked: paused, not served
    assert ranking_item_lease_for(annotator=users["bad"], project_id=project.pk) is None


def test_members_page_shows_ranking_gold_and_the_flag(world):
    project, _users = world
    admin = make_user(project=project, role="admin")
    response = client_for(admin).get(reverse("frontend:members", args=[project.pk]))
    assert response.status_code == 200
    rows = {r["username"]: r for r in response.context["members"]}
    for stat in quality.annotator_stats(project=project):
        assert rows[stat["username"]]["ranking_gold"] == stat["ranking_gold"]
    assert rows["bad"]["flagged"] and rows["bad"]["flag_reason"] == BAD_REASON
    assert not rows["few"]["flagged"]
    # A member without rankings of gold items: no number, no flag.
    assert rows[admin.get_username()]["ranking_gold"]["accuracy"] is None
    html = response.content.decode()
    assert '<th scope="col" class="num">Ranking gold</th>' in html
    bad_row = html.split('data-member="bad"')[1].split("</tr>")[0]
    assert f'title="{BAD_REASON}">flagged</span>' in bad_row
    assert '0% <span class="hint">of 6 pairs, 2 items</span>' in bad_row
    good_row = html.split('data-member="good"')[1].split("</tr>")[0]
    assert '100% <span class="hint">of 6 pairs, 2 items</span>' in good_row
    assert "flagged" not in good_row
    # The rule, with the project's numbers, in the help text.
    assert "ranking gold under 75% on at least 2 gold ranking items" in html
