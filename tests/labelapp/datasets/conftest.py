"""Fixtures of the dataset tests: an artifacts folder per test and a project with
one comparison of every kind an export must sort out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.labelapp.conftest_review import (
    review_comparison,
    review_label,
    review_project,
    review_user,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another one?", "name": "extra-key-dropped"},
]


@pytest.fixture
def artifacts(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


@pytest.fixture
def demo(db: None) -> dict[str, Any]:
    """A project with one comparison of every kind the preference export must sort
    out: clear, majority, tie, all both-bad, unlabelled, multi-turn, mixed."""
    project = review_project("Export Demo")
    u1, u2, u3 = (review_user(n) for n in ("alice", "bob", "carol"))
    c = {}
    c["clear"] = review_comparison(project, "Say hi.", "Hi!", "No.")
    for u, s in ((u1, 3), (u2, 4), (u3, 2)):
        review_label(c["clear"], u, "a", strength=s, duration_ms=5000)
    c["major"] = review_comparison(project, "2+2?", "5", "4")
    review_label(c["major"], u1, "b", strength=2)
    review_label(c["major"], u2, "b", strength=2, shown_swapped=True)
    review_label(c["major"], u3, "a", strength=1)
    c["tie"] = review_comparison(project, "Pick one.", "This.", "That.")
    review_label(c["tie"], u1, "a", strength=2)
    review_label(c["tie"], u2, "b", strength=2)
    c["bad"] = review_comparison(project, "Insult me.", "Idiot.", "Fool.")
    review_label(c["bad"], u1, "both_bad")
    review_label(c["bad"], u2, "both_bad")
    c["none"] = review_comparison(project, "Unlabelled?", "yes", "no")
    c["multi"] = review_comparison(project, MULTI_TURN, "Blue.", "Colours are nice.")
    review_label(c["multi"], u1, "a", strength=4)
    c["mixed"] = review_comparison(project, "Poem?", "Roses are red.", "No poems.")
    review_label(c["mixed"], u1, "a", strength=3)
    review_label(c["mixed"], u2, "both_bad", strength=1)  # as the UI sends it
    # A rejected label must not count: without it "clear" stays unanimous.
    review_label(
        c["clear"], review_user("dave"), "b", strength=4, review_state="rejected"
    )
    return {"project": project, "c": c, "users": (u1, u2, u3)}
