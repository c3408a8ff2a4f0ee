"""Dataset exports: preference pairs, SFT examples and raw labels, as JSONL or Parquet.

``export_run`` is the one entry point (the ``export`` management command and the
Celery task both call it). An export is a folder
``ARTIFACTS_DIR/exports/<project>-<kind>-<timestamp>/`` holding the data file, a
dataset card (``README.md``) and ``manifest.json`` (the same numbers, for programs).
It is built in a hidden temporary folder next to its destination and renamed into
place, so a reader never sees half an export and a crashed export leaves no folder
that looks finished.

Rows stream from the database with ``.iterator(chunk_size=...)`` and are written as
they arrive (Parquet in row groups of one chunk), so memory stays bounded by the chunk
size, not by the project size.

Preference pairs follow TRL's preference format: ``prompt``, ``chosen``, ``rejected``
either as conversations (lists of ``{role, content}``; the default) or as plain
strings. Their aggregates are recomputed from the labels at export time, counting
accepted and pending labels and never rejected ones, so an export is correct even
while the stored ``Comparison`` aggregates are being refreshed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils.text import slugify

from labelapp.datasets.export_card import command_line, dataset_card
from labelapp.datasets.export_formats import (
    FORMATS,
    KINDS,
    ExportOptions,
    ProgressFn,
    label_schema,
    open_writer,
    preference_schema,
    sft_schema,
)
from labelapp.datasets.export_rows import label_rows, preference_rows, sft_rows
from labelapp.errors import NotFound, ValidationFailed
from labelapp.models import Project
from labelapp.selectors.quality import project_agreement

__all__ = ["FORMATS", "KINDS", "ExportOptions", "export_run"]

_PRODUCERS = {
    "preferences": (preference_rows, preference_schema),
    "sft": (sft_rows, sft_schema),
    "labels": (label_rows, label_schema),
}


def export_run(
    *,
    project: Project | int,
    kind: str,
    options: ExportOptions | Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    now: Callable[[], datetime] | None = None,
) -> Path:
    """Write one export and return its folder.

    ``progress(fraction, message)`` is called after every chunk (the Celery task
    forwards it to the Job row). ``now`` is injectable so tests control the folder
    name. Raises ``ValidationFailed`` for bad options and ``NotFound`` for a missing
    project."""
    if isinstance(project, int):
        try:
            project = Project.objects.get(pk=project)
        except Project.DoesNotExist:
            raise NotFound(f"project {project} does not exist") from None
    if kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}")
    opts = (
        options
        if isinstance(options, ExportOptions)
        else ExportOptions.from_mapping(options or {})
    )
    opts.validate()
    report = progress or (lambda _f, _m: None)
    created = (now or (lambda: datetime.now(UTC)))()

    parent = (
        Path(opts.out_dir) if opts.out_dir else Path(settings.ARTIFACTS_DIR) / "exports"
    )
    parent.mkdir(parents=True, exist_ok=True)
    stem = slugify(project.name) or f"project-{project.pk}"
    name = f"{stem}-{kind}-{created.strftime('%Y%m%dT%H%M%SZ')}"
    # Hidden temp folder in the same parent: the final rename stays on one
    # filesystem, so it is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        produce, schema_for = _PRODUCERS[kind]
        counts: dict[str, int] = dict.fromkeys(
            (
                "rows",
                "ties",
                "all_both_bad",
                "below_min_agreement",
                "below_min_labels",
                "no_labels",
            ),
            0,
        )
        report(0.0, f"exporting {kind}")
        writer, data_path = open_writer(
            tmp, kind, opts.format, schema_for(opts.messages)
        )
        try:
            for rows in produce(
                project, opts, counts, lambda f, m: report(0.95 * f, m)
            ):
                writer.write(rows)
        finally:
            writer.close()
        agreement = project_agreement(project=project)
        command = opts.command or command_line(project, kind, opts)
        (tmp / "README.md").write_text(
            dataset_card(
                project=project,
                kind=kind,
                opts=opts,
                counts=counts,
                agreement=agreement,
                data_file=data_path.name,
                created=created,
                command=command,
            ),
            encoding="utf-8",
        )
        manifest = {
            "project": project.pk,
            "kind": kind,
            "file": data_path.name,
            "created": created.isoformat(),
            "counts": counts,
            "options": asdict(opts),
            "alpha": agreement["alpha"],
            "pairwise_agreement": agreement["pairwise_agreement"],
            "command": command,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; exports are shared artifacts
        final = parent / name
        suffix = 1
        # Two exports in the same second: never overwrite a finished export.
        while True:
            try:
                os.rename(tmp, final)
                break
            except OSError:
                if not final.exists():
                    raise
                suffix += 1
                final = parent / f"{name}-{suffix}"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(1.0, f"wrote {counts['rows']} rows to {final}")
    return final
