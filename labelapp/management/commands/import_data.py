from __future__ import annotations

import argparse
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from labelapp.datasets.importing import import_files, project_members_add
from labelapp.errors import DomainError
from labelapp.models import Membership, Project

ROLE_FLAGS = (
    ("--members", Membership.Role.ANNOTATOR),
    ("--reviewers", Membership.Role.REVIEWER),
    ("--admins", Membership.Role.ADMIN),
)


def _usernames(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty username in {value!r}")
    return names


class Command(BaseCommand):
    help = (
        "Import prompts, responses and labelled pairs from JSON-lines files (.gz too) "
        "(or Parquet files such as Pairloop's own preference export) into a project, "
        "atomically, and optionally add existing users as its members. See "
        "labelapp/datasets/records.py for the formats."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument(
            "--project", required=True, help="project name (created if new)"
        )
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="skip (and list) invalid lines instead of aborting the import",
        )
        parser.add_argument(
            "--make-pairs",
            action="store_true",
            help="open comparisons among each imported prompt's responses",
        )
        for flag, role in ROLE_FLAGS:
            parser.add_argument(
                flag,
                type=_usernames,
                default=[],
                metavar="USER,USER",
                help=f"existing users to make {role}s of the project (comma-separated)",
            )

    def handle(self, *args: object, **options: object) -> None:
        last = [-1.0]

        def progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.05 or fraction >= 1.0:
                last[0] = fraction
                self.stderr.write(f"[{fraction:4.0%}] {message}")

        try:
            # The project is created in the same transaction: a failed import of a
            # new project leaves no empty project behind.
            with transaction.atomic():
                project, created = Project.objects.get_or_create(
                    name=options["project"]
                )
                # Members first: an unknown username fails before the files are read.
                added = project_members_add(
                    project=project,
                    usernames_by_role={
                        role: options[flag.lstrip("-")] for flag, role in ROLE_FLAGS
                    },
                )
                result = import_files(
                    project=project,
                    paths=options["files"],
                    skip_invalid=options["skip_invalid"],
                    make_pairs=options["make_pairs"],
                    progress=progress,
                )
        except DomainError as exc:
            raise CommandError(f"{exc}\nnothing was imported") from None
        if created:
            self.stderr.write(f"created project {project.name!r} (id {project.pk})")
        for role, names in added.items():
            self.stderr.write(f"added as {role}: {', '.join(names)}")
        for message in result.skipped:
            self.stderr.write(f"skipped: {message}")
        self.stdout.write(f"project {project.pk} {project.name!r}: {result.summary()}")
