"""Exports queue through a real Celery worker (issue 15 item 15): three exports
asked for back to back all run, one after another, each into its own folder with a
complete .zip of it."""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labelapp.datasets.export_jobs import export_enqueue
from labelapp.models import Job
from tests.e2e.processes import Processes, wait_until
from tests.frontend.dashboard_data import build_demo_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def procs(transactional_db: None, tmp_path: Path, settings: Any):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def test_three_exports_queue_and_each_downloads_as_a_zip(procs: Processes) -> None:
    demo = build_demo_project()
    asked = [
        {"kind": "preferences", "format": "jsonl", "messages": True},
        {"kind": "labels", "format": "parquet"},
        {"kind": "preferences", "format": "parquet", "messages": False},
    ]
    # Queued before any worker runs: the later ones are accepted, not refused.
    queued = [
        export_enqueue(project=demo.project, params=p, by=demo.admin)[0] for p in asked
    ]
    assert len({j.pk for j in queued}) == 3
    assert {j.status for j in queued} == {Job.Status.PENDING}
    procs.start_worker()

    def finished() -> list[Job] | None:
        done = list(Job.objects.filter(pk__in=[j.pk for j in queued]).order_by("pk"))
        if any(j.status == Job.Status.FAILED for j in done):
            raise AssertionError(
                [j.error for j in done] + [procs.log("worker")[-3000:]]
            )
        return done if all(j.status == Job.Status.SUCCEEDED for j in done) else None

    done = wait_until(finished, timeout=300, what="three export jobs")
    # One worker (solo pool): they ran one after another, none waiting on a refusal.
    by_start = sorted(done, key=lambda j: j.started_at)
    for earlier, later in itertools.pairwise(by_start):
        assert earlier.finished_at <= later.started_at
    assert all(j.attempts == 1 for j in done)
    root = Path(settings.ARTIFACTS_DIR) / "exports"
    folders = [job.result["folder"] for job in done]
    assert len(set(folders)) == 3
    for job, params in zip(done, asked, strict=True):
        folder = root / job.result["folder"]
        data = f"{params['kind']}.{params['format']}"
        with zipfile.ZipFile(folder / job.result["archive"]) as archive:
            assert sorted(archive.namelist()) == sorted(
                f"{folder.name}/{n}" for n in ("README.md", "manifest.json", data)
            )
            manifest = json.loads(archive.read(f"{folder.name}/manifest.json"))
            assert manifest["kind"] == params["kind"]
            assert archive.read(f"{folder.name}/{data}") == (folder / data).read_bytes()
