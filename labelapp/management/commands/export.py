"""``python manage.py export``: write a dataset export (see labelapp.datasets.exports)."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labelapp.datasets.exports import FORMATS, KINDS, ExportOptions, export_run
from labelapp.errors import DomainError


class Command(BaseCommand):
    help = (
        "Export a project's preference pairs, SFT examples or raw labels as JSONL or "
        "Parquet, with a dataset card, into OUT/<project>-<kind>-<timestamp>/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="Project id.")
        parser.add_argument("--kind", choices=KINDS, required=True)
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        shape = parser.add_mutually_exclusive_group()
        shape.add_argument(
            "--messages",
            dest="messages",
            action="store_true",
            default=True,
            help="Conversations as lists of {role, content} (default).",
        )
        shape.add_argument(
            "--strings", dest="messages", action="store_false", help="Plain strings."
        )
        parser.add_argument(
            "--min-agreement",
            type=float,
            default=None,
            help="Preferences: drop pairs whose label agreement is below this (0..1).",
        )
        parser.add_argument(
            "--min-labels",
            type=int,
            default=1,
            help="Preferences: drop pairs with fewer non-rejected labels.",
        )
        parser.add_argument(
            "--round",
            dest="rounds",
            type=int,
            action="append",
            default=[],
            help="SFT: only this round number (repeatable).",
        )
        parser.add_argument(
            "--reveal-annotators",
            action="store_true",
            help="Labels: usernames instead of pseudonyms.",
        )
        parser.add_argument(
            "--out",
            default=None,
            help="Parent folder of the export (default ARTIFACTS_DIR/exports).",
        )
        parser.add_argument("--chunk-size", type=int, default=2000)

    def handle(self, *args: Any, **opts: Any) -> None:
        options = ExportOptions(
            format=opts["format"],
            messages=opts["messages"],
            min_agreement=opts["min_agreement"],
            min_labels=opts["min_labels"],
            reveal_annotators=opts["reveal_annotators"],
            rounds=opts["rounds"],
            out_dir=opts["out"],
            chunk_size=opts["chunk_size"],
            command=shlex.join(["python", "manage.py", *sys.argv[2:]])
            if len(sys.argv) > 1 and sys.argv[1] == "export"
            else None,
        )
        verbose = opts["verbosity"] >= 1

        def progress(fraction: float, message: str) -> None:
            if verbose:
                self.stderr.write(f"[{fraction:6.1%}] {message}")

        try:
            path = export_run(
                project=opts["project"],
                kind=opts["kind"],
                options=options,
                progress=progress,
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(path))
