"""The ranking review page in a real browser (Debian's chromium via Playwright),
keyboard only: from the review page's "Rankings" link to the list, j and Enter
open the first pending ranking, a accepts it and the next one opens, n writes a
note, Esc leaves the box, r rejects with it, and the list says nothing is left.
Model text stays inert (no script runs). A screenshot goes to docs/ with
PAIRLOOP_SCREENSHOT=1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelapp.models import Label, Membership, Project, Ranking, RankingItem
from labelapp.services.content import prompt_create, response_create
from labelapp.services.rankings import ranking_item_create, ranking_submit
from tests.frontend.test_project_browser import login, shot, user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fast_hashes(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def item_of(project: Project, question: str, texts: list[str]) -> RankingItem:
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": question}]
    )
    ids = [response_create(prompt=prompt, text=t).pk for t in texts]
    return ranking_item_create(project=project, prompt_id=prompt.pk, response_ids=ids)


@pytest.mark.django_db(transaction=True)
def test_review_rankings_by_keyboard(live_server: Any, page: Any) -> None:
    project = Project.objects.create(name="Rank review", overlap=1)
    ranker = user("ranker")
    Membership.objects.create(project=project, user=ranker)
    boss = user("boss")
    Membership.objects.create(project=project, user=boss, role="reviewer")
    first = item_of(
        project,
        "Which prime is **smallest**?",
        ["Two.", "<img src=x onerror=alert(1)> Three.", "Five, *surely*.", "Seven."],
    )
    second = item_of(project, "Say hello.", ["Hello!", "hi", "Greetings."])
    a, b, c, _d = first.response_ids
    r1 = ranking_submit(item=first, annotator=ranker, tiers=[[c], [a, b]])
    r2 = ranking_submit(
        item=second, annotator=ranker, tiers=[[i] for i in second.response_ids]
    )

    login(page, live_server.url, "boss")
    page.goto(f"{live_server.url}/projects/{project.pk}/review/")
    link = page.locator("#rankings-link")
    assert link.inner_text() == "Rankings (2 pending)"
    # The page selects its first label (the rankings' implied ones are listed
    # there too); the link is a few Shift+Tabs back, as a keyboard user goes.
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.id") == "rankings-link":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/projects/{project.pk}/review/rankings/")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/review/rankings/{r1.pk}/")
    tiers = page.locator("#ranked-tiers > li")
    assert tiers.count() == 2
    assert "tie of 2" in tiers.nth(1).inner_text()
    assert "Five, surely." in tiers.nth(0).inner_text()
    assert page.locator("#ranked-tiers em", has_text="surely").count() == 1
    assert page.locator("#rank-review img").count() == 0  # sanitised, shown as text
    assert "onerror=alert(1)" in tiers.nth(1).inner_text()
    assert "Unranked (1)" in page.locator("#unranked").inner_text()
    shot(page, "ranking-review-page.png")

    page.keyboard.press("a")
    page.wait_for_url(f"**/review/rankings/{r2.pk}/")
    assert f"Ranking {r1.pk} accepted." in page.locator(".flash").inner_text()
    page.keyboard.press("n")
    page.keyboard.type("Greetings is the best here.")
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    page.wait_for_url(f"**/projects/{project.pk}/review/rankings/")
    assert "No pending ranking left." in page.locator(".flash").inner_text()
    assert page.get_by_text("Nothing to review").count() == 1

    r1.refresh_from_db()
    r2.refresh_from_db()
    assert (r1.review_state, r1.reviewed_by_id) == ("accepted", boss.pk)
    assert (r2.review_state, r2.review_note) == (
        "rejected",
        "Greetings is the best here.",
    )
    for ranking, state in ((r1, "accepted"), (r2, "rejected")):
        labels = Label.objects.filter(ranking=ranking)
        assert labels.exists()
        assert set(labels.values_list("review_state", flat=True)) == {state}
    assert not Ranking.objects.filter(review_state="pending").exists()
    assert page.js_errors == [] and page.dialogs == []
