"""services.uploads and selectors.uploads: staged files are previewed with the
importer's reader, then imported all or nothing."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labelapp.errors import ImportFailed, NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Comparison, Prompt, Response
from labelapp.selectors.uploads import record_format, upload_preview
from labelapp.services.uploads import staged_files, upload_commit, upload_stage
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db


def jsonl(*objs: object, bad_line: int | None = None) -> bytes:
    lines = [json.dumps(o) for o in objs]
    if bad_line is not None:
        lines.insert(bad_line - 1, '{"prompt": "unterminated')
    return ("\n".join(lines) + "\n").encode()


GOOD = jsonl(
    {"prompt": "What is 2+2?", "response": "4"},
    {"prompt": "What is 2+2?", "response": "Four."},
    {"prompt": "What is 2+2?", "response": "It is 4."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Loud."},
)


@dataclass
class World:
    project: object
    admin: object


@pytest.fixture
def world(settings, tmp_path) -> World:
    settings.ARTIFACTS_DIR = tmp_path
    project = make_project(overlap=2)
    return World(project, make_user(project=project, role="admin"))


def stage(world: World, *files: tuple[str, bytes]) -> str:
    uploads = [SimpleUploadedFile(name, data) for name, data in files]
    return upload_stage(project=world.project, by=world.admin, files=uploads)


def test_a_bad_line_is_named_and_nothing_is_written(world):
    staging = stage(
        world,
        ("good.jsonl", GOOD),
        ("bad.jsonl", jsonl({"prompt": "a"}, {"prompt": "b"}, bad_line=2)),
    )
    previews = upload_preview(
        files=staged_files(project=world.project, staging_id=staging)
    )
    assert previews[0].error == ""
    assert previews[1].error.startswith("bad.jsonl, line 2: invalid JSON")
    with pytest.raises(ImportFailed, match=r"^bad\.jsonl, line 2: invalid JSON"):
        upload_commit(
            project=world.project, by=world.admin, staging_id=staging, make_pairs=True
        )
    assert not Prompt.objects.filter(project=world.project).exists()
    # The staged copy stays, so the page can show the error again.
    assert staged_files(project=world.project, staging_id=staging)


def test_good_files_import_with_pairs(world):
    staging = stage(world, ("data.jsonl.gz", gzip.compress(GOOD)))
    (preview,) = upload_preview(
        files=staged_files(project=world.project, staging_id=staging)
    )
    assert preview.records == 4 and preview.kinds == {"response": 3, "pair": 1}
    assert "prompt with a response (3)" in preview.detected
    assert "TRL preference pair (1)" in preview.detected
    result = upload_commit(
        project=world.project, by=world.admin, staging_id=staging, make_pairs=True
    )
    assert result.created["prompts"] == 2
    assert Response.objects.filter(prompt__project=world.project).count() == 5
    # 3 responses of one prompt -> 3 pairs built, plus the labelled TRL pair.
    assert Comparison.objects.filter(project=world.project).count() == 4
    with pytest.raises(NotFound):  # the staged copy is gone
        staged_files(project=world.project, staging_id=staging)


def test_refusals(world):
    with pytest.raises(ValidationFailed, match=r"not a \.jsonl"):
        stage(world, ("data.csv", b"a,b\n"))
    with pytest.raises(ValidationFailed, match="choose one or more"):
        stage(world)
    with pytest.raises(NotFound):
        staged_files(project=world.project, staging_id="../../etc")
    annotator = make_user(project=world.project)
    with pytest.raises(PermissionDenied):
        upload_stage(
            project=world.project,
            by=annotator,
            files=[SimpleUploadedFile("a.jsonl", GOOD)],
        )


def test_a_staging_id_does_not_cross_projects(world):
    staging = stage(world, ("good.jsonl", GOOD))
    other = make_project()
    with pytest.raises(NotFound):
        staged_files(project=other, staging_id=staging)


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        ({"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "x"}, "HH"),
        ({"prompt": "p", "response_a": "a", "response_b": "b", "p_a": 1}, "p_a"),
        ({"question_id": 1, "turns": ["q"]}, "MT-bench"),
        ({"uid": "u", "choices": []}, "arena-hard model answer"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "prompt"),
        ({"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0]}, "ranked"),
        ({"prompt": "p", "responses": ["a", "b"]}, "responses to rank"),
        ({"message_tree_id": "t", "prompt": {"text": "q"}}, "Open-Assistant"),
    ],
)
def test_record_format_names(obj, name):
    assert name in record_format(obj)


def test_a_large_upload_imports_in_a_job(world, django_capture_on_commit_callbacks):
    from labelapp import tasks
    from labelapp.models import Job
    from labelapp.services.uploads import upload_commit_later

    staging = stage(world, ("good.jsonl", GOOD))
    with django_capture_on_commit_callbacks() as sent:  # the task is not sent
        job = upload_commit_later(
            project=world.project, by=world.admin, staging_id=staging, make_pairs=True
        )
    assert len(sent) == 1 and job.kind == Job.Kind.IMPORT
    assert not Prompt.objects.filter(project=world.project).exists()
    tasks.import_upload(job.pk)  # the worker's task, run here
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result["prompts"] == 2
    assert job.result["summary"].startswith("4 lines")
    assert Comparison.objects.filter(project=world.project).count() == 4


def test_a_job_import_with_a_bad_line_fails_and_writes_nothing(
    world, django_capture_on_commit_callbacks
):
    from labelapp import tasks
    from labelapp.services.uploads import upload_commit_later

    staging = stage(world, ("bad.jsonl", jsonl({"prompt": "a"}, bad_line=2)))
    with django_capture_on_commit_callbacks():
        job = upload_commit_later(
            project=world.project, by=world.admin, staging_id=staging, make_pairs=False
        )
    with pytest.raises(ImportFailed):
        tasks.import_upload(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "bad.jsonl, line 2: invalid JSON" in job.error
    assert not Prompt.objects.filter(project=world.project).exists()
