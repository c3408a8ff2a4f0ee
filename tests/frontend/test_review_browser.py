"""The review queue in a real browser (Debian's chromium via Playwright, the e2e
fixtures): a reviewer works by keyboard only, and screenshots of the review page and
the quality dashboard (written to docs/ with PAIRLOOP_SCREENSHOT=1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from labelapp.models import Label
from tests.frontend.dashboard_data import PASSWORD, build_demo_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def login(page: Any, base_url: str, username: str) -> None:
    """Keyboard only: the username field has autofocus."""
    page.goto(f"{base_url}/login/")
    # autofocus can land after "load"; typing earlier would go nowhere.
    page.wait_for_function("() => document.activeElement.name === 'username'")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/", wait_until="commit")


def current(page: Any) -> int:
    page.wait_for_function(
        "() => window.pairloopReview && window.pairloopReview.current"
    )
    return page.evaluate("() => window.pairloopReview.current")


def focused_label(page: Any) -> str:
    return page.evaluate("() => document.activeElement.id")


def dom_labels(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.eval_on_selector_all(
            ".review-label", "rows => rows.map(r => r.dataset.labelId)"
        )
    ]


def next_pending_after(order: list[int], label_id: int) -> int:
    """The pending label after ``label_id`` in the page's order (the database's
    states before the decision)."""
    pending = set(
        Label.objects.filter(pk__in=order, review_state="pending").values_list(
            "pk", flat=True
        )
    )
    return next(pk for pk in order[order.index(label_id) + 1 :] if pk in pending)


@pytest.mark.django_db(transaction=True)
def test_review_by_keyboard(live_server: Any, page: Any) -> None:
    demo = build_demo_project(password=PASSWORD)
    login(page, live_server.url, "reviewer")
    # From the project list to the review page without a mouse: follow the link.
    review_link = page.get_by_role("link", name="Review")
    review_link.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    order = dom_labels(page)
    assert current(page) == order[0]
    assert focused_label(page) == f"label-{order[0]}"

    page.keyboard.press("j")
    page.keyboard.press("j")
    assert current(page) == order[2]
    page.keyboard.press("k")
    assert current(page) == order[1]
    assert focused_label(page) == f"label-{order[1]}"

    # Reject the selected label: the page posts, reloads and moves on to the next
    # pending label after it, in the order the reviewer saw (issue 18 item 6).
    rejected = order[1]
    expected = next_pending_after(order, rejected)
    with page.expect_navigation():
        page.keyboard.press("r")
    label = Label.objects.get(pk=rejected)
    assert label.review_state == "rejected" and label.reviewed_by == demo.reviewer
    assert current(page) == expected
    assert focused_label(page) == f"label-{expected}"

    # The selected label: write a note (n … Esc), then accept it with a.
    accepted = current(page)
    order = dom_labels(page)
    expected = next_pending_after(order, accepted)
    page.keyboard.press("n")
    page.keyboard.type("Matches the guidelines.")
    page.keyboard.press("Escape")
    assert focused_label(page) == f"label-{accepted}"
    with page.expect_navigation():
        page.keyboard.press("a")
    label = Label.objects.get(pk=accepted)
    assert label.review_state == "accepted"
    assert label.review_note == "Matches the guidelines."
    # Accepting moves on as well: no extra key to reach the next pending label.
    assert current(page) == expected
    assert focused_label(page) == f"label-{expected}"
    assert Label.objects.get(pk=expected).review_state == "pending"

    # Shift+J jumps to the first label of the next comparison.
    here = page.evaluate("() => document.activeElement.closest('.review-item').id")
    page.keyboard.press("Shift+J")
    there = page.evaluate("() => document.activeElement.closest('.review-item').id")
    assert there != here

    # A pair shown swapped says how its annotator saw it: their letters (those of
    # the rationale) beside the canonical choice (issue 15, item 6).
    shown = dom_labels(page)
    swapped = [
        lb
        for lb in Label.objects.filter(pk__in=shown).select_related("comparison")
        if lb.shown_swapped
    ]
    assert swapped
    for lb in swapped:
        note = page.inner_text(f"#label-{lb.pk} .seen")
        theirs = {"a": "B (right)", "b": "A (left)"}.get(lb.choice)
        if theirs:
            assert f"they picked “{theirs}”" in note
        assert f"left #{lb.comparison.response_b_id} (B here)" in note
        assert page.get_attribute(f"#label-{lb.pk} .seen", "data-displayed-choice") == (
            lb.displayed_choice
        )
    unswapped = next(pk for pk in shown if pk not in {lb.pk for lb in swapped})
    assert page.locator(f"#label-{unswapped} .seen").count() == 0

    page.keyboard.press("?")
    assert page.evaluate("() => document.getElementById('help').open")
    page.keyboard.press("Escape")
    assert not page.evaluate("() => document.getElementById('help').open")
    assert page.js_errors == [] and page.dialogs == []


@pytest.mark.django_db(transaction=True)
def test_bulk_accept_by_keyboard(live_server: Any, page: Any) -> None:
    """Type a gold-accuracy floor into the bulk form and press Enter: the
    review page's shortcuts leave the field alone, and only the labels of
    annotators at or above it are accepted."""
    demo = build_demo_project(password=PASSWORD)
    login(page, live_server.url, "reviewer")
    page.goto(f"{live_server.url}/projects/{demo.project.pk}/review/")
    current(page)  # the shortcuts are live
    page.focus("#bulk-min-gold")
    page.keyboard.type("70")
    assert page.input_value("#bulk-min-gold") == "70"  # not taken as shortcuts
    with page.expect_navigation():
        page.keyboard.press("Enter")
    accepted = Label.objects.filter(review_state="accepted", reviewed_by=demo.reviewer)
    assert accepted.exists()
    assert not accepted.filter(annotator=demo.careless).exists()
    n = accepted.count()
    assert f"Accepted {n} pending label" in page.inner_text("body")
    assert page.js_errors == [] and page.dialogs == []


@pytest.mark.django_db(transaction=True)
def test_screenshots(live_server: Any, page: Any, tmp_path: Path) -> None:
    build_demo_project(password=PASSWORD)
    login(page, live_server.url, "admin")
    page.set_viewport_size({"width": 1280, "height": 1250})
    # Project ids differ between runs: open the review page from the project list.
    page.goto(f"{live_server.url}/")
    with page.expect_navigation():
        page.get_by_role("link", name="Review").click()
    page.keyboard.press("j")
    page.evaluate("() => window.scrollTo(0, 0)")
    review_png = tmp_path / "review-page.png"
    page.screenshot(path=str(review_png))

    page.set_viewport_size({"width": 1280, "height": 900})
    with page.expect_navigation():
        page.get_by_role("link", name="Quality").click()
    # The plots load lazily: scroll through them as a reader would (six plots are
    # more than one screen).
    for img in page.locator("img").all():
        img.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )
    quality_png = tmp_path / "quality-dashboard.png"
    page.screenshot(path=str(quality_png), full_page=True)
    assert page.js_errors == []
    for png in (review_png, quality_png):
        assert png.stat().st_size > 20_000
        if os.environ.get("PAIRLOOP_SCREENSHOT") == "1":
            shutil.copy(png, ROOT / "docs" / png.name)
