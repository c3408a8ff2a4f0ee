"""Exports as background jobs: enqueue from the exports page, run in the Celery task
``pairloop.export`` and find the finished folder again for download.

Job params are a whitelist of ``ExportOptions`` fields: a web user must not choose
``out_dir`` (a path on the server) or ``command`` (text written into the card).
"""

from __future__ import annotations

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
    """Start an export job (one active export per project; an active one is returned
    with ``created=False``). Validates the options now, so a bad form fails at once
    rather than in the worker."""
    if not selectors.can_administer(by, project.pk):
        raise PermissionDenied("Only admins of this project may export it.")
    _options(params)
    return jobs.job_enqueue(
        project=project,
        kind=Job.Kind.EXPORT,
        params=dict(params),
        created_by=by,
        if_active="return",
    )


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
        progress=lambda fraction, message: report(fraction, message),
    )
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    report(1.0, f"export written: {folder.name}", force=True)
    return {"folder": folder.name, "files": files}


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
