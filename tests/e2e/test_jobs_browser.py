"""The jobs page in a real browser shows a real job's progress moving: a Celery
worker subprocess trains a (tiny) reward model while the page polls."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from labelapp.datasets.importing import import_files
from labelapp.models import Job, Membership, Project
from tests.e2e.processes import wait_until
from tests.training.conftest import save_tiny_base

# An outer ceiling against hangs only: the test waits for the job's states, and the
# job is sized in steps; a loaded machine makes it longer, never failing.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
HANG = 1200  # seconds
PASSWORD = "jobs-page-password-1"


def test_progress_moves_during_a_real_job(procs, page, tmp_path):
    reward_base = save_tiny_base(tmp_path / "reward-base", "encoder")
    project = Project.objects.create(
        name="jobs-page",
        reward_base_ref=str(reward_base),
        # Enough steps that the page polls (every second) several progress reports:
        # ~6,000 optimizer steps (about 20 s on a quiet 2-core machine; on a busy
        # one it only takes longer, and the page sees more values).
        rm_config={
            "num_epochs": 1000,
            "batch_size": 2,
            "max_length": 32,
            "progress_interval_s": 0.2,
        },
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {"prompt": f"question {i} ?", "chosen": "good", "rejected": "bad"}
            )
            + "\n"
            for i in range(12)
        )
    )
    import_files(project=project, paths=[pairs])
    admin = get_user_model().objects.create_user("boss", password=PASSWORD)
    Membership.objects.create(project=project, user=admin, role="admin")

    url = procs.start_web()
    procs.start_worker()
    page.goto(f"{url}/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/projects/{project.pk}/jobs/")
    # Start the job from the page, as an admin would.
    page.get_by_role("button", name="Train reward model now").click()
    page.wait_for_url(f"{url}/projects/{project.pk}/jobs/")
    job = Job.objects.get(project=project, kind="train_rm")
    bar = page.locator(f'tr[data-job-id="{job.pk}"] progress')

    seen: list[float] = []

    def finished() -> bool:
        # Sample the bar the page shows while waiting for the job's end state.
        if page.locator(f'tr[data-job-id="{job.pk}"]').count():
            value = float(bar.evaluate("el => el.value"))
            if not seen or value != seen[-1]:
                seen.append(value)
        job.refresh_from_db()
        return job.status in ("succeeded", "failed")

    wait_until(finished, timeout=HANG, what=f"job {job.pk} to end", every=0.2)
    assert job.status == "succeeded", job.error
    # The bar moved through several values in between, without reloading the page.
    moving = [v for v in seen if 0 < v < 1]
    assert len(moving) >= 2, seen
    assert moving == sorted(moving)
    # When the job ends the page reloads and shows the promoted version.
    wait_until(
        lambda: page.locator("text=first reward model").count() > 0,
        timeout=HANG,
        what="the new version on the page",
    )
    assert page.locator(f'tr[data-job-id="{job.pk}"] .pill').inner_text() == "succeeded"
