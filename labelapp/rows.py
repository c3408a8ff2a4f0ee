"""Model instances from hand-written SQL rows (the queue's hot path)."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)


def loaded(model: type[M], values: dict[str, Any]) -> M:
    """An instance as if the ORM had loaded it: the given fields (by attname) set,
    every other field deferred (loaded on access, never a silent default), and
    save() updates rather than inserts."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[n] for n in names])
