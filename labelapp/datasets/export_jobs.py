"""Exports as background jobs: enqueue from the exports page, run in the Celery task
``pairloop.export`` and find the finished folder again for download.

Exports queue: each request is its own job (the one-active-job-per-kind rule exempts
exports), so a new one waits for a free worker instead of being refused. A job's
folder also holds ``<folder>.zip``, the whole export as one download.

Job params are a whitelist of ``ExportOptions`` fields: a web user must not choose
``out_dir`` (a path on the server) or ``command`` (text written into the card).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from labelapp import jobs, selectors
from labelapp.datasets.exports import KINDS, ExportOptions, export_run
from labelapp.errors import NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Job, Project

# Option fields a job may carry (plus "kind"); anything else is refused.
JOB_OPTION_FIELDS = frozenset(
    {"format", "messages", "min_agreement", "min_labels", "reveal_annotators", "rounds"}
)


def exports_root() -> Path:
    return (Path(settings.ARTIFACTS_DIR) / "exports").resolve()


def _options(params: Mapping[str, Any]) -> tuple[str, ExportOptions]:
    kind = params.get("kind")
    if kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}")
    unknown = set(params) - JOB_OPTION_FIELDS - {"kind"}
    if unknown:
        raise ValidationFailed(f"unknown export options: {', '.join(sorted(unknown))}")
    opts = ExportOptions.from_mapping({k: v for k, v in params.items() if k != "kind"})
    opts.validate()
    return kind, opts


def export_enqueue(
    *, project: Project, params: Mapping[str, Any], by: AbstractBaseUser
) -> tuple[Job, bool]:
    """Queue an export job; returns ``(job, True)``. Exports already waiting or
    running do not block it: it runs when a worker is free. Validates the options
    now, so a bad form fails at once rather than in the worker."""
    if not selectors.can_administer(by, project.pk):
        raise PermissionDenied("Only admins of this project may export it.")
    _options(params)
    return jobs.job_enqueue(
        project=project,
        kind=Job.Kind.EXPORT,
        params=dict(params),
        created_by=by,
        if_active="raise",
    )


def exports_ahead(job: Job) -> int:
    """How many of the project's exports were queued before ``job`` and have not
    finished (the page says how long a new one will wait)."""
    return Job.objects.filter(
        project_id=job.project_id,
        kind=Job.Kind.EXPORT,
        status__in=Job.ACTIVE,
        pk__lt=job.pk,
    ).count()


def archive_name(folder: Path) -> str:
    return f"{folder.name}.zip"


# Already compressed: storing is as small and much faster than deflating again.
_STORED = {".parquet", ".zip", ".gz"}


def export_archive_write(folder: Path) -> Path:
    """Write ``<folder>/<folder name>.zip`` holding every file of the export under
    ``<folder name>/``, so it unpacks into the same folder. Written to a hidden
    temporary name and renamed, so a listed archive is always complete."""
    target = folder / archive_name(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=".zip.tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or path == target or not path.is_file():
                    continue
                archive.write(
                    path,
                    f"{folder.name}/{path.name}",
                    compress_type=zipfile.ZIP_STORED
                    if path.suffix in _STORED
                    else zipfile.ZIP_DEFLATED,
                )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def export_job(job: Job, report: jobs.Reporter) -> dict[str, Any]:
    """Service for the ``pairloop.export`` task: run the export the job describes and
    return where it went (relative to the exports root, so the result stays valid if
    ARTIFACTS_DIR is mounted elsewhere)."""
    kind, opts = _options(job.params)
    if job.project_id is None:
        raise ValidationFailed("an export job needs a project")
    folder = export_run(
        project=job.project_id,
        kind=kind,
        options=opts,
        progress=lambda fraction, message: report(0.98 * fraction, message),
    )
    archive = export_archive_write(folder)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    report(1.0, f"export written: {folder.name}", force=True)
    return {"folder": folder.name, "files": files, "archive": archive.name}


def export_folder(job: Job) -> Path:
    """The finished export folder of ``job``; ``NotFound`` when there is none.

    The folder name comes from the job's result, which a worker wrote; it is still
    resolved and checked to lie directly under the exports root."""
    if job.kind != Job.Kind.EXPORT or job.status != Job.Status.SUCCEEDED:
        raise NotFound("This job has no finished export.")
    name = (job.result or {}).get("folder")
    root = exports_root()
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise NotFound("This job has no export folder.")
    folder = (root / name).resolve()
    if folder.parent != root or not folder.is_dir():
        raise NotFound("The export folder is gone.")
    return folder


def export_file(job: Job, filename: str) -> Path:
    """One file of a finished export, refusing anything that is not a plain file
    directly inside the export folder (``..``, absolute paths, symlinks out)."""
    folder = export_folder(job)
    if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
        raise NotFound("No such file in this export.")
    path = folder / filename
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder:
        raise NotFound("No such file in this export.")
    return path


def export_files(job: Job) -> Iterator[tuple[str, int]]:
    """(name, size) of the files of a finished export, for the download links."""
    folder = export_folder(job)
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            yield path.name, path.stat().st_size


def export_archive(job: Job) -> tuple[str, int] | None:
    """(name, size) of the one-file download of a finished export; ``None`` for an
    export made before archives existed (or whose archive was removed)."""
    try:
        folder = export_folder(job)
    except NotFound:
        return None
    path = folder / archive_name(folder)
    if path.is_file() and not path.is_symlink():
        return path.name, path.stat().st_size
    return None
