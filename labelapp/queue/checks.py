"""System check: the queue's PostgreSQL functions as installed are the ``sql/*.sql``
files' text (labelapp/queue/functions.py). A file edited without a migration that
installs it is an Error, so a policy change cannot silently not ship.

A database check (Django runs those only when asked for a database): ``manage.py
check --database default`` reports it, and so does ``migrate``. Skipped quietly when
the database cannot be reached or labelapp has migrations not yet applied (the
pending migration is what installs the new text; ``migrate`` runs the checks before
it applies anything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core import checks
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from labelapp.queue import functions

# Tests point this at a copy of the files.
SQL_DIR: Path | None = None


def _migrated(connection: Any) -> bool:
    executor = MigrationExecutor(connection)
    targets = [
        key for key in executor.loader.graph.leaf_nodes() if key[0] == "labelapp"
    ]
    return not executor.migration_plan(targets)


@checks.register(checks.Tags.database)
def queue_sql_drift(databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if DEFAULT_DB_ALIAS not in (databases or ()):
        return []
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        return []
    try:
        if not _migrated(connection):
            return []
        with connection.cursor() as cursor:
            problems = functions.drift(cursor, SQL_DIR)
    except DatabaseError:
        return []  # unreachable (or no migration table yet): nothing to compare
    folder = SQL_DIR if SQL_DIR is not None else functions.SQL_DIR
    return [
        checks.Error(
            f"PostgreSQL function {f.name} {what}: it differs from {folder / f.file}.",
            hint="Write a migration that installs the file's text: manage.py"
            " queue_sql_migration (then migrate).",
            obj=f.name,
            id="labelapp.E101",
        )
        for f, what in problems
    ]
