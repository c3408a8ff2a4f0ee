"""Hand-written SQL on the hot path (the queue, token auth): a cursor whose statements
PostgreSQL plans once, and model instances from the rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import connection, models
from django.db.backends.postgresql.base import ServerBindingCursor

M = TypeVar("M", bound=models.Model)


def loaded(model: type[M], values: dict[str, Any]) -> M:
    """An instance as if the ORM had loaded it: the given fields (by attname) set,
    every other field deferred (loaded on access, never a silent default), and
    save() updates rather than inserts."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[n] for n in names])


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A Django cursor (statements are logged, counted by CaptureQueriesContext and
    pass execute wrappers, in the current transaction) over a psycopg cursor with
    server-side binding. psycopg prepares a statement on its connection once it ran
    ``prepare_threshold`` times there (config.env.parse_database_url: 2 unless
    DATABASE_URL says otherwise; ``off`` disables it), and PostgreSQL switches a
    prepared statement to a generic plan after five executions, so it stops
    re-planning it: for the queue's statements planning costs 3-5x their execution
    (0.3-0.5 ms vs ~0.1 ms each). The project's other cursors bind client-side and
    are never prepared. psycopg forgets its prepared statements on a rollback (it
    cannot tell what the rolled-back transaction dropped), so a Conflict costs the
    next few requests on that connection their plans; commits keep them.

    Statements run here must not hide a plan choice behind a parameter (a generic
    plan cannot pick a partial index by a parameter's value): such values are
    literals in the SQL text, one prepared statement per value."""
    connection.ensure_connection()
    with connection._prepare_cursor(ServerBindingCursor(connection.connection)) as c:
        yield c
