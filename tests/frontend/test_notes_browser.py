"""Label discussion in a real browser (Debian's chromium via Playwright): a
reviewer writes a note by keyboard only on the review page; the label's annotator
sees the unread count on the home page, opens the notes page and reads it, as
text (a note is never markup)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from labelapp.models import LabelNote
from tests.frontend.dashboard_data import PASSWORD, build_demo_project
from tests.frontend.test_review_browser import current, login

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "Please re-read rule 2 <img src=x onerror=alert(1)>"


@pytest.mark.django_db(transaction=True)
def _screenshot(page: Any, png: Path) -> None:
    """Written to docs/ with PAIRLOOP_SCREENSHOT=1, as the other page tests do."""
    page.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size > 10_000
    if os.environ.get("PAIRLOOP_SCREENSHOT") == "1":
        shutil.copy(png, ROOT / "docs" / png.name)


def test_reviewer_note_reaches_annotator(
    live_server: Any, page: Any, tmp_path: Path
) -> None:
    demo = build_demo_project(password=PASSWORD)
    login(page, live_server.url, "reviewer")
    page.goto(f"{live_server.url}/projects/{demo.project.pk}/review/")
    page.keyboard.press("j")
    label_id = current(page)
    page.keyboard.press("c")
    assert page.evaluate("() => document.activeElement.name") == "body"
    page.keyboard.type(HOSTILE)
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    note = LabelNote.objects.get(label_id=label_id)
    assert note.body == HOSTILE and note.author == demo.reviewer
    assert note.read_at is None
    # Back on the label, its thread open with the note as text.
    assert current(page) == label_id
    assert HOSTILE in page.inner_text(f"#notes-{label_id} .note-thread")
    author = note.label.annotator.get_username()

    page.context.clear_cookies()
    login(page, live_server.url, author)
    link = page.get_by_role("link", name="1 new note on your labels")
    link.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert HOSTILE in page.inner_text(f"#note-label-{label_id}")
    assert page.locator(f"#note-label-{label_id} img").count() == 0
    assert "1 new note" in page.inner_text("#unread-total")
    _screenshot(page, tmp_path / "notes-page.png")
    note.refresh_from_db()
    assert note.read_at is not None
    # Seen: the home page no longer counts it.
    page.goto(f"{live_server.url}/")
    assert "new note" not in page.inner_text("main")
    assert page.locator("table.daily-counts").count() == 1
    _screenshot(page, tmp_path / "home-page.png")
    assert page.js_errors == [] and page.dialogs == []
