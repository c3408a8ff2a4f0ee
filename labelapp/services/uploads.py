"""Writes of the browser's data upload: stage the files, then import them with the
importer (labelapp.datasets.importing.import_files: all or nothing, line-precise
errors), then drop the staged copy.

Staged files live under ARTIFACTS_DIR/uploads/<project id>/<random id>/, so a
staging id from one project cannot name another project's files, and the id is
checked to be the hex this module makes before it becomes part of a path.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from labelapp import access
from labelapp.datasets.importing import ImportResult, import_files
from labelapp.errors import ImportFailed, NotFound, PermissionDenied, ValidationFailed
from labelapp.jobs import job_enqueue
from labelapp.models import Job, Project

SUFFIXES = (".jsonl", ".jsonl.gz")
# Uploads above MAX_UPLOAD_BYTES are refused (the page points to import_data); above
# JOB_BYTES the import runs as a background job (Job.Kind.IMPORT, the
# "pairloop.import" task), not in a request that can time out.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
JOB_BYTES = 4 * 1024 * 1024
MAX_FILES = 20
_ID = re.compile(r"^[0-9a-f]{32}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class Uploaded(Protocol):
    name: str
    size: int

    def chunks(self) -> Iterable[bytes]: ...


def _root(project: Project) -> Path:
    return Path(settings.ARTIFACTS_DIR) / "uploads" / str(project.pk)


def _check_admin(by: AbstractBaseUser, project: Project) -> None:
    if not access.can_admin(user=by, project=project):
        raise PermissionDenied("Only admins of a project upload data to it.")


def _safe_name(name: str, index: int) -> str:
    base = _SAFE_NAME.sub("_", Path(name).name)[:100] or "upload"
    return f"{index:02d}-{base}"


def upload_stage(
    *, project: Project, by: AbstractBaseUser, files: list[Uploaded]
) -> str:
    """Copy the uploaded files to a new staging folder; return its id."""
    _check_admin(by, project)
    if not files:
        raise ValidationFailed("choose one or more .jsonl or .jsonl.gz files")
    if len(files) > MAX_FILES:
        raise ValidationFailed(f"at most {MAX_FILES} files per upload")
    total = sum(f.size for f in files)
    if total > MAX_UPLOAD_BYTES:
        raise ValidationFailed(
            f"{total:,} bytes is over the browser upload's {MAX_UPLOAD_BYTES:,}; "
            "import larger data with manage.py import_data"
        )
    for f in files:
        if not f.name.lower().endswith(SUFFIXES):
            raise ValidationFailed(
                f"{f.name}: not a .jsonl or .jsonl.gz file (the importer's formats)"
            )
    staging_id = secrets.token_hex(16)
    folder = _root(project) / staging_id
    folder.mkdir(parents=True)
    for index, f in enumerate(files):
        with (folder / _safe_name(f.name, index)).open("wb") as out:
            for chunk in f.chunks():
                out.write(chunk)
    return staging_id


def staged_files(*, project: Project, staging_id: str) -> list[tuple[str, Path]]:
    """(shown name, path) of the staged files, in upload order."""
    if not _ID.match(staging_id or ""):
        raise NotFound("no such upload")
    folder = _root(project) / staging_id
    if not folder.is_dir():
        raise NotFound("this upload is gone; choose the files again")
    return [(p.name[3:], p) for p in sorted(folder.iterdir())]


def upload_discard(*, project: Project, staging_id: str) -> None:
    if _ID.match(staging_id or ""):
        shutil.rmtree(_root(project) / staging_id, ignore_errors=True)


def upload_commit(
    *,
    project: Project,
    by: AbstractBaseUser,
    staging_id: str,
    make_pairs: bool,
) -> ImportResult:
    """Import the staged files in one transaction (the importer's); on success the
    staged copy is removed, on an error it stays so the page can show it again."""
    _check_admin(by, project)
    files = staged_files(project=project, staging_id=staging_id)
    names = {str(path): name for name, path in files}
    try:
        result = import_files(
            project=project, paths=[p for _n, p in files], make_pairs=make_pairs
        )
    except ImportFailed as exc:
        # The importer names the staged path; the page shows the uploaded name.
        message = str(exc)
        for path, name in names.items():
            message = message.replace(path, name)
        raise ImportFailed(message) from None
    upload_discard(project=project, staging_id=staging_id)
    return result


def staged_bytes(*, project: Project, staging_id: str) -> int:
    return sum(
        p.stat().st_size
        for _n, p in staged_files(project=project, staging_id=staging_id)
    )


def upload_commit_later(
    *,
    project: Project,
    by: AbstractBaseUser,
    staging_id: str,
    make_pairs: bool,
) -> Job:
    """Queue the import of the staged files as a job (one import job per project
    at a time: two would serialise on the project's row lock anyway)."""
    _check_admin(by, project)
    staged_files(project=project, staging_id=staging_id)  # NotFound before queueing
    job, _created = job_enqueue(
        project=project,
        kind=Job.Kind.IMPORT,
        params={"staging_id": staging_id, "make_pairs": make_pairs},
        created_by=by,
        if_active="raise",
    )
    return job


def upload_import_job(job: Job, reporter: Callable[[float, str], None]) -> dict:
    """The import job's service (labelapp.tasks.import_upload): the same all-or-nothing
    import as upload_commit, reporting progress; its result is the summary."""
    project = job.project
    staging_id = str(job.params.get("staging_id", ""))
    files = staged_files(project=project, staging_id=staging_id)
    names = {str(path): name for name, path in files}
    reporter(0.0, f"importing {len(files)} file{'s' * (len(files) != 1)}")
    try:
        result = import_files(
            project=project,
            paths=[p for _n, p in files],
            make_pairs=bool(job.params.get("make_pairs")),
            progress=reporter,
        )
    except ImportFailed as exc:
        message = str(exc)
        for path, name in names.items():
            message = message.replace(path, name)
        raise ImportFailed(message) from None
    upload_discard(project=project, staging_id=staging_id)
    return {"summary": result.summary(), "lines": result.lines, **result.created}
