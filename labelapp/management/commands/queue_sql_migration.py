"""Write the migration that installs labelapp/queue/sql/*.sql as they are now.

    python manage.py queue_sql_migration [--name queue_sql]

The migration embeds a frozen copy of each file's text (never reads the live files,
so replaying history installs what each step installed) and, as its reverse, the text
the previous such migration installed. Nothing is written when the files match what
migrations already install.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.migrations.loader import MigrationLoader

from labelapp.queue import functions

_APP = "labelapp"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _frozen(module: Any) -> dict[str, str] | None:
    """The file texts a migration module installs: QUEUE_SQL (written by this
    command), or 0005's two constants (written by hand, before the files)."""
    if hasattr(module, "QUEUE_SQL"):
        return dict(module.QUEUE_SQL)
    if hasattr(module, "CANDIDATE") and hasattr(module, "NEXT"):
        return {"candidate.sql": module.CANDIDATE, "next.sql": module.NEXT}
    return None


def latest_installed() -> tuple[tuple[str, str], dict[str, str]]:
    """(labelapp's leaf migration, the texts the newest queue-SQL migration up to it
    installs)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)  # files only
    leaves = [key for key in loader.graph.leaf_nodes() if key[0] == _APP]
    if len(leaves) != 1:
        raise CommandError(f"{_APP} has {len(leaves)} leaf migrations; merge first.")
    for key in reversed(loader.graph.forwards_plan(leaves[0])):
        if key[0] != _APP:
            continue
        migration = loader.graph.nodes[key]
        frozen = _frozen(sys.modules[type(migration).__module__])
        if frozen is not None:
            return leaves[0], frozen
    raise CommandError("No migration installs the queue's functions yet.")


def _literal(text: str) -> str:
    """A Python literal of ``text``, as readable as it can be."""
    if '"""' not in text and "\\" not in text and not text.endswith('"'):
        return 'r"""' + text + '"""'
    return repr(text)


def migration_source(
    leaf: tuple[str, str], texts: dict[str, str], previous: dict[str, str]
) -> str:
    def block(name: str, values: dict[str, str]) -> str:
        items = "".join(
            f"    {json.dumps(f)}: {_literal(t)},\n" for f, t in values.items()
        )
        return f"{name} = {{\n{items}}}\n"

    q = json.dumps
    ops = "".join(
        f"        migrations.RunSQL(QUEUE_SQL[{q(f)}], PREVIOUS[{q(f)}]),\n"
        for f in texts
    )
    return (
        '"""Install labelapp/queue/sql/*.sql as they were when this migration was\n'
        "written (manage.py queue_sql_migration). Frozen copies: a later edit of\n"
        'the files needs a new migration."""\n\n'
        "from django.db import migrations\n\n"
        "# File -> its text, installed by this migration.\n"
        + block("QUEUE_SQL", texts)
        + "\n# What the previous migration installed: the reverse.\n"
        + block("PREVIOUS", previous)
        + "\n\nclass Migration(migrations.Migration):\n"
        f"    dependencies = [({q(leaf[0])}, {q(leaf[1])})]\n\n"
        "    operations = [\n" + ops + "    ]\n"
    )


class Command(BaseCommand):
    help = "Write a migration installing labelapp/queue/sql/*.sql as they are now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", default="queue_sql", help="migration name")
        parser.add_argument("--sql-dir", type=Path, default=None, help="(tests)")
        parser.add_argument("--output-dir", type=Path, default=None, help="(tests)")

    def handle(self, *args: Any, **options: Any) -> None:
        # Parsing checks each file defines one function.
        current = {f.file: f.text for f in functions.read(options["sql_dir"])}
        leaf, previous = latest_installed()
        if current == previous:
            self.stdout.write("No changes: migrations install the files as they are.")
            return
        added = sorted(set(current) - set(previous))
        if added:
            raise CommandError(
                f"New file(s) {', '.join(added)}: write their migration by hand"
                " (the reverse is a DROP FUNCTION with the signature)."
            )
        number = int(leaf[1].split("_", 1)[0]) + 1
        name = f"{number:04d}_{options['name']}"
        out = (options["output_dir"] or MIGRATIONS_DIR) / f"{name}.py"
        if out.exists():
            raise CommandError(f"{out} exists.")
        source = migration_source(leaf, current, {f: previous[f] for f in current})
        out.write_text(source, encoding="utf-8")
        self.stdout.write(f"Wrote {out}; run manage.py migrate.")
