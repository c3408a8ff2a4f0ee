"""``python manage.py import_gold --project ID FILE``: mark comparisons as gold items.

FILE holds JSON lines ``{"comparison_id": N, "gold_choice": "a"|"b"|"tie"}`` (``-``
reads stdin). The import is atomic: one bad line and nothing changes."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labelapp.errors import DomainError
from labelapp.models import Project
from labelapp.services.gold import gold_import


class Command(BaseCommand):
    help = "Mark comparisons of a project as gold items from a JSON-lines file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="Project id.")
        parser.add_argument("file", help='JSON-lines file, or "-" for stdin.')

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(pk=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"project {options['project']} does not exist") from None
        path = options["file"]
        try:
            if path == "-":
                count = gold_import(project=project, lines=sys.stdin)
            else:
                with open(path, encoding="utf-8") as fh:
                    count = gold_import(project=project, lines=fh)
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        except DomainError as exc:
            raise CommandError(f"{path}: {exc}; nothing was imported") from None
        self.stdout.write(f"marked {count} comparisons as gold in {project.name}")
