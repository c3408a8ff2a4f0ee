"""The jobs page in Debian's chromium with a project's history on it: the kind
filter works from the keyboard, timestamps do not wrap, and the page is what
docs/jobs-page.png shows (written there with PAIRLOOP_SCREENSHOT=1, see
bench/screenshot.py; a temporary file otherwise).

The rows are made in the database (the real job that moves the progress bar is
tests/e2e/test_jobs_browser.py); what is tested here is the page."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from labelapp.models import Job, Membership, ModelVersion, Project, Round
from tests.e2e.test_compare_browser import PASSWORD, login
from tests.labelapp.conftest import make_comparisons

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]


def _history(project: Project) -> None:
    t0 = timezone.now() - timedelta(hours=2)

    def job(kind: str, minute: int, seconds: float, message: str, **kw: Any) -> Job:
        start = t0 + timedelta(minutes=minute)
        done = kw.pop("status", "succeeded") == "succeeded"
        j = Job.objects.create(
            project=project,
            kind=kind,
            status="succeeded" if done else "running",
            progress=1.0 if done else 0.42,
            message=message,
            started_at=start,
            finished_at=start + timedelta(seconds=seconds) if done else None,
            **kw,
        )
        Job.objects.filter(pk=j.pk).update(created_at=start - timedelta(seconds=2))
        return j

    rm = ModelVersion.objects.create(
        project=project, version=1, base_ref="builtin:minilm-l6", n_pairs=312,
        status="promoted", status_reason="first reward model",
        metrics={"eval": {"accuracy": 0.712, "log_loss": 0.583, "ece": 0.041}},
    )  # fmt: skip
    policy = ModelVersion.objects.create(
        project=project, kind="policy", version=1, parent=None,
        base_ref="builtin:smollm2-135m-instruct", status="promoted",
        status_reason="RM gate passed; human audit agrees (0.625)",
        metrics={
            "n_sft": 24, "n_dpo": 41,
            "eval": {"win": {"win_rate": 0.650, "ci_low": 0.573, "ci_high": 0.720},
                     "reward_gain": 0.065, "kl": 1.77, "length_ratio": 0.91,
                     "distinct_2_ratio": 0.98, "candidate_truncation_rate": 0.11},
            "audit": {"pending": False, "comparisons": [{}] * 8,
                      "human": {"rate": 0.625, "ci_low": 0.31, "ci_high": 0.86}},
        },
    )  # fmt: skip
    stats = {
        "reward": {"mean": -0.21, "best_mean": 0.34},
        "diversity": {"distinct_2": 0.61},
        "length_correlation": {"spearman": 0.18},
        "duplicate_rate": 0.0,
        "data_guard": {"kept": 19},
    }
    r0 = Round.objects.create(
        project=project, number=0, policy_ref=policy.base_ref, status="done",
        stats={"diversity": {"distinct_2": 0.62}, "duplicate_rate": 0.0},
    )  # fmt: skip
    r1 = Round.objects.create(
        project=project, number=1, policy_ref=policy.base_ref, reward_version=rm,
        status="done", stats=stats,
    )  # fmt: skip
    r2 = Round.objects.create(
        project=project, number=2, policy_ref="policy v1", policy_version=policy,
        reward_version=rm, status="done", stats=stats | {"reward": {"mean": -0.05,
        "best_mean": 0.41}},
    )  # fmt: skip
    for i, r in enumerate((r0, r1, r2)):
        make_comparisons(project, 12, start=12 * i, round=r)
    job("round", 0, 412.3, "round 0: 12 new comparisons")
    job("export", 9, 3.1, "export 1: 12 rows")
    job("train_rm", 31, 188.0, "registered v1 (promoted)")
    job("round", 36, 455.9, "round 1: 12 new comparisons")
    job("train_policy", 45, 1610.4, "policy v1 promoted")
    job("round", 73, 431.0, "round 2: 12 new comparisons")
    job("score_comparisons", 81, 0, "scoring 4,812 comparisons", status="running")


@pytest.mark.django_db(transaction=True)
def test_jobs_page_filters_by_kind_from_the_keyboard(
    live_server: Any, page: Any, django_user_model: Any, tmp_path: Path
) -> None:
    user = django_user_model.objects.create_user(username="ann", password=PASSWORD)
    project = Project.objects.create(name="Helpful answers", overlap=2)
    Membership.objects.create(project=project, user=user, role="admin")
    _history(project)
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.goto(f"{live_server.url}/projects/{project.pk}/jobs/")
    rows = page.locator("#jobs-table tbody tr")
    assert rows.count() == 7
    # Started / finished / duration, and a timestamp that stays on one line.
    first_round = page.locator("#jobs-table tbody tr", has_text="round 0:")
    assert "412.3 s" in first_round.inner_text()
    # (The cell is as tall as its row; the <time> inside is as tall as its lines.)
    stamp = first_round.locator("td.nowrap time").first
    box = stamp.bounding_box()
    line = float(stamp.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)"))
    assert box is not None and box["height"] < 1.5 * line  # one line

    target = (
        ROOT / "docs" / "jobs-page.png"
        if os.environ.get("PAIRLOOP_SCREENSHOT") == "1"
        else tmp_path / "jobs-page.png"
    )
    # The policy plot loads lazily: bring it into view and wait for it.
    plot = page.locator("#policy-plot img")
    plot.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.querySelector('#policy-plot img');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 20_000

    # Filter by kind with the keyboard only: focus the rounds link, press Enter.
    page.locator("nav.job-filter a", has_text="Rejection-sampling round").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/jobs/?kind=round")
    assert rows.count() == 3
    assert all("Rejection-sampling round" in t for t in rows.all_inner_texts())
    current = page.locator("nav.job-filter a[aria-current=page]")
    assert current.inner_text() == "Rejection-sampling round"
    # "All" brings every kind back.
    page.locator("nav.job-filter a", has_text="All").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/projects/{project.pk}/jobs/")
    assert rows.count() == 7
    assert page.js_errors == [] and page.dialogs == []
