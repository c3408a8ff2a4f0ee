"""The queue's PostgreSQL functions: their source of truth is ``sql/*.sql`` beside this
module; migrations install frozen copies of that text (embedded in each migration, so
history stays reproducible); the drift check and the migration writer read both.

Each file holds one ``CREATE OR REPLACE FUNCTION name(...) ... AS $fn$ body $fn$;``.
PostgreSQL keeps the body verbatim in ``pg_proc.prosrc``, so drift is a plain text
comparison of that body with the file's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).resolve().parent / "sql"

# In install order (next calls candidate; plpgsql resolves calls at run time, but the
# order keeps a reader's path through them).
FILES = ("candidate.sql", "next.sql")

_DEFINITION = re.compile(
    r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+(?P<name>[a-z_][a-z0-9_]*)\s*\(.*?"
    r"\bAS\s+\$fn\$(?P<body>.*?)\$fn\$\s*;",
    re.DOTALL | re.IGNORECASE,
)


@dataclass(frozen=True)
class Function:
    name: str
    file: str  # as named in FILES
    text: str  # the whole file: what a migration runs
    body: str  # between the $fn$ quotes: what pg_proc.prosrc holds


def parse(file: str, text: str) -> Function:
    """The function a .sql file defines; ValueError naming the file if it defines
    none (or more than one)."""
    found = list(_DEFINITION.finditer(text))
    if len(found) != 1:
        raise ValueError(
            f"{file}: expected one CREATE OR REPLACE FUNCTION ... AS $fn$ ... $fn$;"
            f" found {len(found)}"
        )
    return Function(found[0]["name"], file, text, found[0]["body"])


def read(sql_dir: Path | None = None) -> list[Function]:
    """The functions as the files define them now."""
    folder = SQL_DIR if sql_dir is None else sql_dir
    return [parse(f, (folder / f).read_text(encoding="utf-8")) for f in FILES]


def installed_bodies(cursor: Any, names: list[str]) -> dict[str, str]:
    """prosrc of each named function in the connection's search path (absent names
    are missing from the result)."""
    cursor.execute(
        "SELECT p.proname, p.prosrc FROM pg_proc p"
        " WHERE p.proname = ANY(%s) AND pg_function_is_visible(p.oid)",
        [names],
    )
    return dict(cursor.fetchall())


def drift(cursor: Any, sql_dir: Path | None = None) -> list[tuple[Function, str]]:
    """(function, what is wrong) for each file whose function is not installed as
    written."""
    functions = read(sql_dir)
    installed = installed_bodies(cursor, [f.name for f in functions])
    problems = []
    for f in functions:
        if f.name not in installed:
            problems.append((f, "is not installed"))
        elif installed[f.name] != f.body:
            problems.append((f, "is installed with a different text"))
    return problems
