"""A preference export imports back (issue 15 item 3, the export side): a real
project is exported as JSONL and as Parquet, the file goes through ``import_data``
into a new project, and that project holds the same pairs with the same p_a."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from labelapp.datasets.exports import export_run
from labelapp.models import Comparison, Label, Project
from tests.labelapp.conftest_review import review_refresh

pytestmark = pytest.mark.django_db


def _pairs(project: Project) -> dict[tuple[str, str, str], float]:
    """(prompt, text preferred, text not preferred) → share of labels for the
    preferred one, whatever the orientation the project stored."""
    out = {}
    rows = Comparison.objects.filter(project=project, p_a__isnull=False).values_list(
        "prompt__messages", "response_a__text", "response_b__text", "p_a"
    )
    for messages, a, b, p_a in rows:
        if abs(p_a - 0.5) < 1e-9:
            continue  # ties are not exported
        # Exports keep role and content only (TRL's shape; see clean_messages).
        prompt = json.dumps([[m["role"], m["content"]] for m in messages])
        out[(prompt, a, b) if p_a > 0.5 else (prompt, b, a)] = max(p_a, 1 - p_a)
    return out


def _exported(project: Project, fmt: str, messages: bool = True) -> Path:
    folder = export_run(
        project=project,
        kind="preferences",
        options={"format": fmt, "messages": messages},
    )
    return folder / f"preferences.{fmt}"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_preference_export_imports_back_with_the_same_pairs_and_p_a(
    demo: dict[str, Any], artifacts: Path, fmt: str
) -> None:
    original = demo["project"]
    for comparison in demo["c"].values():
        review_refresh(comparison)  # stored p_a, to compare the copy's with
    path = _exported(original, fmt)
    call_command("import_data", str(path), "--project=copy")
    copy = Project.objects.get(name="copy")

    expected = _pairs(original)
    got = _pairs(copy)
    assert set(got) == set(expected) and len(got) == 4  # clear, major, multi, mixed
    for key, p in expected.items():
        assert got[key] == pytest.approx(p, abs=1e-9), key
    # The majority pair (2 of 3 labels) keeps its soft label, not a hard 1.0.
    assert sorted(got.values()) == pytest.approx([2 / 3, 1.0, 1.0, 1.0])
    # One imported label per pair, its strength the nearest level to the mean.
    labels = Label.objects.filter(comparison__project=copy)
    assert labels.count() == 4 and {lab.source for lab in labels} == {"imported"}
    strengths = {
        lab.comparison.response_a.text: lab.strength
        for lab in labels.select_related("comparison__response_a")
    }
    assert strengths["Hi!"] == 3  # mean of 3, 4, 2
    # Exporting the copy gives the same rows again (texts, p_chosen, chosen side).
    again = _exported(copy, "jsonl")
    first = _exported(original, "jsonl")

    def rows(p: Path) -> set[tuple[str, str, str, float]]:
        return {
            (
                json.dumps(r["prompt"]),
                json.dumps(r["chosen"]),
                json.dumps(r["rejected"]),
                round(r["p_chosen"], 9),
            )
            for r in map(json.loads, p.read_text().splitlines())
        }

    assert rows(again) == rows(first)
    # Importing the same export again adds nothing.
    call_command("import_data", str(path), "--project=copy")
    assert Comparison.objects.filter(project=copy).count() == 4


def test_plain_string_export_imports_back(
    demo: dict[str, Any], artifacts: Path
) -> None:
    """With --strings a multi-turn prompt is one text, so it comes back as a single
    user turn holding that text; texts and p_a still match pair by pair."""
    for comparison in demo["c"].values():
        review_refresh(comparison)
    path = _exported(demo["project"], "jsonl", messages=False)
    call_command("import_data", str(path), "--project=copy-strings")
    copy = Project.objects.get(name="copy-strings")
    got = {(a, b): p for (_prompt, a, b), p in _pairs(copy).items()}
    want = {(a, b): p for (_prompt, a, b), p in _pairs(demo["project"]).items()}
    assert got == pytest.approx(want)
