"""What the queue's modules share: the assignment row as the hand-written SQL returns
it, the injected clock, and statement 1 of ``label`` and ``skip`` (the comparison
lock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone

from labelapp.db import loaded
from labelapp.errors import NotFound
from labelapp.models import Assignment

_ASSIGNMENT_COLUMNS = (
    "id",
    "comparison_id",
    "annotator_id",
    "project_id",
    "state",
    "swapped",
    "leased_at",
    "expires_at",
    "finished_at",
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in _ASSIGNMENT_COLUMNS)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _assignment(row: Sequence[Any]) -> Assignment:
    """Assignment from a row that starts with ``_ASSIGNMENT_COLUMNS``."""
    n = len(_ASSIGNMENT_COLUMNS)
    return loaded(Assignment, dict(zip(_ASSIGNMENT_COLUMNS, row[:n], strict=True)))


# Statement 1 of ``label`` and ``skip``: lock the comparison of the annotator's own
# assignment (the global lock order: comparison before assignment). Only the
# comparison row is locked; comparison_id never changes, so the subquery's snapshot
# is good enough to find it. Someone else's assignment is reported as not found, so
# ids cannot be probed.
_LOCK_COMPARISON_SQL = """
SELECT c.id, c.project_id, c.status, c.labels_count, c.labels_required
FROM labelapp_comparison c
WHERE c.id = (
    SELECT a.comparison_id FROM labelapp_assignment a
    WHERE a.id = %(assignment_id)s AND a.annotator_id = %(user_id)s
)
FOR UPDATE OF c
"""


def _lock_comparison_of(cursor: Any, assignment_id: int, user_id: int) -> tuple:
    cursor.execute(
        _LOCK_COMPARISON_SQL, {"assignment_id": assignment_id, "user_id": user_id}
    )
    row = cursor.fetchone()
    if row is None:
        raise NotFound("Assignment not found.")
    return row
