"""Export jobs: the pairloop.export service run through the real Job machinery, the
download view, and path traversal refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from labelapp import jobs, tasks
from labelapp.datasets.export_jobs import export_enqueue, export_file, export_job
from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.models import Job
from labelapp.tasknames import TASK_FOR_KIND
from tests.frontend.dashboard_data import DemoProject, build_demo_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(settings: Any, tmp_path: Path) -> DemoProject:
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return build_demo_project()


def _run(demo: DemoProject, params: dict) -> Job:
    job, created = export_enqueue(project=demo.project, params=params, by=demo.admin)
    assert created
    done = jobs.job_run(job_id=job.pk, worker="test-worker", service=export_job)
    assert done is not None
    return done


def test_task_is_registered_under_the_jobs_name() -> None:
    assert tasks.export.name == TASK_FOR_KIND[Job.Kind.EXPORT] == "pairloop.export"


def test_export_job_writes_files_and_reports(demo: DemoProject, tmp_path: Path) -> None:
    job = _run(
        demo,
        {"kind": "preferences", "format": "jsonl", "messages": True},
    )
    assert job.status == Job.Status.SUCCEEDED and job.progress == 1.0
    folder = tmp_path / "artifacts" / "exports" / job.result["folder"]
    archive = f"{folder.name}.zip"
    assert job.result["files"] == [
        "README.md",
        archive,
        "manifest.json",
        "preferences.jsonl",
    ]
    assert job.result["archive"] == archive
    rows = (folder / "preferences.jsonl").read_text().splitlines()
    assert rows and {"prompt", "chosen", "rejected"} <= set(json.loads(rows[0]))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["project"] == demo.project.pk

    client = Client()
    client.force_login(demo.admin)
    url = reverse(
        "frontend:export-download",
        args=[demo.project.pk, job.pk, "preferences.jsonl"],
    )
    response = client.get(url)
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    assert b"".join(response.streaming_content).decode().splitlines() == rows
    # Reviewers and annotators may not download; the page links the files.
    for user, status in ((demo.reviewer, 403), (demo.annotators[0], 403)):
        other = Client()
        other.force_login(user)
        assert other.get(url).status_code == status
    page = client.get(reverse("frontend:exports", args=[demo.project.pk]))
    assert url in page.content.decode()


def test_labels_export_job_in_parquet(demo: DemoProject) -> None:
    job = _run(demo, {"kind": "labels", "format": "parquet"})
    assert "labels.parquet" in job.result["files"]


def test_job_params_are_a_whitelist(demo: DemoProject, tmp_path: Path) -> None:
    # out_dir would let a web user write anywhere the worker can.
    with pytest.raises(ValidationFailed, match="out_dir"):
        export_enqueue(
            project=demo.project,
            params={"kind": "labels", "out_dir": str(tmp_path / "evil")},
            by=demo.admin,
        )
    # A row written some other way is refused by the service too.
    job = Job.objects.create(
        project=demo.project,
        kind=Job.Kind.EXPORT,
        params={"kind": "labels", "out_dir": str(tmp_path / "evil")},
    )
    with pytest.raises(ValidationFailed):
        jobs.job_run(job_id=job.pk, worker="w", service=export_job)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert not (tmp_path / "evil").exists()


TRAVERSAL = ["..", "...", ".hidden", "..%2F..%2Fsecret.txt", "x%00", "nope.txt"]


def test_download_refuses_traversal(demo: DemoProject, tmp_path: Path) -> None:
    job = _run(demo, {"kind": "labels"})
    secret = tmp_path / "artifacts" / "secret.txt"
    secret.write_text("do not serve")
    client = Client()
    client.force_login(demo.admin)
    base = reverse(
        "frontend:export-download", args=[demo.project.pk, job.pk, "README.md"]
    ).rsplit("/", 1)[0]
    for filename in TRAVERSAL:
        response = client.get(f"{base}/{filename}")
        assert response.status_code == 404, filename
        body = b"".join(getattr(response, "streaming_content", [response.content]))
        assert b"do not serve" not in body


def test_export_file_checks(demo: DemoProject, tmp_path: Path) -> None:
    job = _run(demo, {"kind": "labels"})
    folder = tmp_path / "artifacts" / "exports" / job.result["folder"]
    (tmp_path / "artifacts" / "secret.txt").write_text("x")
    (folder / "link.txt").symlink_to(tmp_path / "artifacts" / "secret.txt")
    for name in ("../secret.txt", "/etc/passwd", "link.txt", "sub\\x", ""):
        with pytest.raises(NotFound):
            export_file(job, name)
    # A tampered result pointing outside the exports root is refused as well.
    Job.objects.filter(pk=job.pk).update(result={"folder": ".."})
    job.refresh_from_db()
    with pytest.raises(NotFound):
        export_file(job, "README.md")
    other = Client()
    other.force_login(demo.admin)
    wrong_project = reverse(
        "frontend:export-download", args=[demo.project.pk + 1000, job.pk, "README.md"]
    )
    assert other.get(wrong_project).status_code == 404


def test_archive_downloads_the_whole_export_as_one_zip(demo: DemoProject) -> None:
    job = _run(demo, {"kind": "preferences", "format": "parquet"})
    name = job.result["folder"]
    client = Client()
    client.force_login(demo.admin)
    page = client.get(reverse("frontend:exports", args=[demo.project.pk])).content
    url = reverse(
        "frontend:export-download", args=[demo.project.pk, job.pk, f"{name}.zip"]
    )
    assert url in page.decode() and f"Download {name}.zip" in page.decode()
    response = client.get(url)
    assert response.status_code == 200
    assert f'filename="{name}.zip"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == [
            f"{name}/README.md",
            f"{name}/manifest.json",
            f"{name}/preferences.parquet",
        ]
        folder = Path(settings.ARTIFACTS_DIR) / "exports" / name
        for member in archive.namelist():
            original = (folder / member.split("/", 1)[1]).read_bytes()
            assert archive.read(member) == original, member
        table = pq.read_table(io.BytesIO(archive.read(f"{name}/preferences.parquet")))
        assert table.num_rows > 0 and "chosen" in table.column_names
    for user in (demo.reviewer, demo.annotators[0]):
        other = Client()
        other.force_login(user)
        assert other.get(url).status_code == 403


def test_exports_queue_instead_of_being_refused(demo: DemoProject) -> None:
    """Three exports asked for at once are three jobs: none is refused or folded into
    another, and the page says the later ones wait."""
    client = Client()
    client.force_login(demo.admin)
    url = reverse("frontend:exports", args=[demo.project.pk])
    notes = []
    for kind in ("preferences", "labels", "preferences"):
        response = client.post(
            url, {"kind": kind, "format": "jsonl", "shape": "messages"}, follow=True
        )
        assert response.status_code == 200
        notes.append([str(m) for m in response.context["messages"]])
    queued = list(
        Job.objects.filter(project=demo.project, kind=Job.Kind.EXPORT).order_by("pk")
    )
    assert [j.status for j in queued] == ["pending"] * 3
    assert [j.params["kind"] for j in queued] == [
        "preferences",
        "labels",
        "preferences",
    ]
    assert notes == [
        [f"Export job #{queued[0].pk} queued."],
        [f"Export job #{queued[1].pk} queued behind 1 unfinished export."],
        [f"Export job #{queued[2].pk} queued behind 2 unfinished exports."],
    ]
    # Other kinds keep their one-active-job rule.
    jobs.job_enqueue(project=demo.project, kind=Job.Kind.TRAIN_RM)
    with pytest.raises(Conflict):
        jobs.job_enqueue(
            project=demo.project, kind=Job.Kind.TRAIN_RM, if_active="raise"
        )
