"""Ranking mode in a real browser (Debian's chromium via Playwright), keyboard only:
a partial ranking with a tie and an undo, then a full ranking, a skip, then
"nothing left".
Model text is shown sanitised (no script runs). A screenshot goes to docs/ with
PAIRLOOP_SCREENSHOT=1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelapp.models import (
    Label,
    Membership,
    Project,
    Ranking,
    RankingAssignment,
    RankingItem,
)
from labelapp.selectors.rankings import ranking_display_order
from labelapp.services.content import prompt_create, response_create
from labelapp.services.rankings import ranking_item_create
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


def wait_for_prompt(page: Any, text: str) -> None:
    page.locator("#conversation", has_text=text).wait_for()


@pytest.mark.django_db(transaction=True)
def test_rank_by_keyboard_with_a_partial_ranking(live_server: Any, page: Any) -> None:
    project = Project.objects.create(name="Rankings", overlap=1)
    ranker = user("ranker")
    Membership.objects.create(project=project, user=ranker)
    first = item_of(
        project,
        "Which prime is **smallest**?",
        ["Two.", "<img src=x onerror=alert(1)> Three.", "Five, *surely*.", "Seven."],
    )
    second = item_of(project, "Say hello.", ["Hello!", "hi", "Greetings."])
    third = item_of(project, "Say goodbye.", ["Bye.", "Farewell!"])

    login(page, live_server.url, "ranker")
    page.goto(f"{live_server.url}/projects/{project.pk}/rank/")
    wait_for_prompt(page, "Which prime is smallest?")
    prompt_html = page.locator("#conversation").inner_html()
    assert "<strong>smallest</strong>" in prompt_html
    assert page.locator("#responses img").count() == 0  # sanitised like compare
    assert page.locator("#responses em", has_text="surely").count() == 1
    order = ranking_display_order(item=first, annotator_id=ranker.pk)
    shown = [
        page.locator(f"#response-{n} .response-body").inner_text() for n in range(1, 5)
    ]
    texts = dict(first.prompt.responses.values_list("id", "text"))
    # The img tag shows as text (escaped, never an element), markdown as markup.

    def head(text: str) -> str:
        return text.replace("<img src=x onerror=alert(1)>", "").strip()[:3]

    assert [head(t) for t in shown] == [head(texts[i]) for i in order]

    # 3 first, 1 tied with it, 2 next; undo the 2; submit: 2 and 4 unranked.
    for key in ["3", "t", "1", "2"]:
        page.keyboard.press(key)
    page.locator("#tiers li").nth(1).wait_for()
    assert page.locator("#tiers li").all_inner_texts() == [
        "Response 3 = Response 1 (tie)",
        "Response 2",
    ]
    page.keyboard.press("Backspace")
    assert page.locator("#tiers li").all_inner_texts() == [
        "Response 3 = Response 1 (tie)"
    ]
    assert page.locator("#rank-badge-3").inner_text() == "1st (tie)"
    assert page.locator("#rank-badge-4").inner_text() == "unranked"
    assert "Unranked: Response 2, Response 4" in page.locator("#unranked").inner_text()
    shot(page, "ranking-page.png")
    page.keyboard.press("Enter")
    wait_for_prompt(page, "Say hello.")
    ranking = Ranking.objects.get(item=first, annotator=ranker)
    assert ranking.tiers == [[order[2], order[0]]]
    # A top-1 (tied) ranking of 4: 1 tie + 2·2 wins over the unranked = 5 pairs.
    assert Label.objects.filter(ranking=ranking).count() == 5

    # The second item, ranked in full; the third skipped; then nothing is left.
    for key in ["2", "3", "1"]:
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    wait_for_prompt(page, "Say goodbye.")
    page.keyboard.press("s")
    page.get_by_text("Nothing left to rank").wait_for()
    skipped = RankingAssignment.objects.get(item=third, annotator=ranker)
    assert skipped.state == "skipped"
    assert not Ranking.objects.filter(item=third).exists()
    order2 = ranking_display_order(item=second, annotator_id=ranker.pk)
    assert Ranking.objects.get(item=second, annotator=ranker).tiers == [
        [order2[1]],
        [order2[2]],
        [order2[0]],
    ]
    assert page.locator("#ranked-count").inner_text() == "2"
    assert set(
        RankingItem.objects.exclude(pk=third.pk).values_list("status", flat=True)
    ) == {"complete"}
    assert page.js_errors == [] and page.dialogs == []
