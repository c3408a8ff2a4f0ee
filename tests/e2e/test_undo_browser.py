"""Undo, skip reasons and "my recent labels" in a real browser (Debian's chromium):
an annotator undoes a label with the u key, answers the pair again, skips with a
reason, and changes a label on the recent-labels page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from labelapp.models import Assignment, Comparison, Label
from tests.e2e.test_compare_browser import _setup_project, login, wait_sent, wait_shown

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Null-safe: between pairs (loading the next one) nothing is current.
SHOWS = "id => (window.pairloopStats.current || {}).comparisonId === id"
MOVED_ON = (
    "id => window.pairloopStats.current !== null"
    " && window.pairloopStats.current.comparisonId !== id"
)


@pytest.mark.django_db(transaction=True)
def test_undo_by_key_relabel_skip_with_reason_and_edit(
    live_server: Any, page: Any, django_user_model: Any, tmp_path: Path
) -> None:
    _user, project = _setup_project(django_user_model, 4)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/projects/{project.pk}/compare/")

    first = wait_shown(page)
    page.keyboard.press("1")
    page.keyboard.press("e")
    page.keyboard.press("Enter")
    second = wait_shown(page)
    assert second["comparisonId"] != first["comparisonId"]
    wait_sent(page)
    assert Label.objects.filter(comparison_id=first["comparisonId"]).exists()

    page.keyboard.press("u")
    page.wait_for_function(
        SHOWS,
        arg=first["comparisonId"],
    )
    assert "Undone" in page.inner_text("#toast")
    # The old answer is selected again, ready to change.
    assert page.is_checked('input[name="choice"][value="a"]')
    assert page.is_checked('input[name="strength"][value="3"]')
    assert not Label.objects.filter(comparison_id=first["comparisonId"]).exists()
    comparison = Comparison.objects.get(pk=first["comparisonId"])
    assert comparison.status == "open" and comparison.labels_count == 0
    assert Assignment.objects.get(pk=first["assignmentId"]).state == "leased"

    # Answer it anew: B, strength 1. The pair that was showing comes next.
    page.keyboard.press("2")
    page.keyboard.press("q")
    page.keyboard.press("Enter")
    page.wait_for_function(
        SHOWS,
        arg=second["comparisonId"],
    )
    wait_sent(page)
    relabel = Label.objects.get(comparison_id=first["comparisonId"])
    assert relabel.displayed_choice == "b" and relabel.strength == 1
    comparison.refresh_from_db()
    assert comparison.status == "complete" and comparison.labels_count == 1

    # Skip the second pair with a reason (picked from the list, then the s key).
    page.select_option("#skip-reason", "Prompt unclear")
    page.focus("#compare")
    page.keyboard.press("s")
    assert page.inner_text("#toast") == "Skipped: Prompt unclear"
    page.wait_for_function(
        MOVED_ON,
        arg=second["comparisonId"],
    )
    wait_sent(page)
    skipped = Assignment.objects.get(pk=second["assignmentId"])
    assert skipped.state == "skipped" and skipped.skip_reason == "Prompt unclear"
    # The form was reset for the next pair: no reason carried over.
    assert page.input_value("#skip-reason") == ""

    # My recent labels: change the relabelled answer to a tie, by keyboard.
    page.goto(f"{live_server.url}/projects/{project.pk}/my-labels/")
    card = f"#label-{relabel.pk}"
    page.focus(f'{card} input[name="choice"][value="tie"]')
    page.keyboard.press("Space")
    page.focus(f"{card} textarea")
    page.keyboard.type("Both say the same.")
    page.focus(f"{card} .edit-form button")
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash")
    assert f"Label {relabel.pk} changed." in page.inner_text(".flash")
    relabel.refresh_from_db()
    assert relabel.choice == "tie" and relabel.strength is None
    assert relabel.rationale == "Both say the same." and relabel.edited_at
    comparison.refresh_from_db()
    assert comparison.p_a == 0.5
    assert not page.js_errors
    # Written to docs/ with PAIRLOOP_SCREENSHOT=1, as the other page tests do.
    png = tmp_path / "my-labels-page.png"
    page.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size > 10_000
    if os.environ.get("PAIRLOOP_SCREENSHOT") == "1":
        shutil.copy(png, Path(__file__).resolve().parents[2] / "docs" / png.name)
