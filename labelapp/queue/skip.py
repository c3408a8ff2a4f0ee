"""``skip``: give a leased comparison back; it is never served to the annotator again."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labelapp.db import prepared_cursor
from labelapp.errors import Conflict
from labelapp.models import Assignment
from labelapp.queue.assignments import (
    _ASSIGNMENT_COLUMNS,
    _assignment,
    _lock_comparison_of,
    _now,
)

# ``skip``'s write: a conditional UPDATE instead of locking the assignment and
# re-reading it. With the comparison locked, only lease expiry (leased -> expired)
# can change the row concurrently, and both states may be skipped.
_SKIP_SQL = f"""
UPDATE labelapp_assignment
SET state = 'skipped', finished_at = %(now)s
WHERE id = %(assignment_id)s AND state IN ('leased', 'expired')
RETURNING {", ".join(_ASSIGNMENT_COLUMNS)}
"""


def assignment_skip(
    *, assignment_id: int, annotator: AbstractBaseUser, now: datetime | None = None
) -> Assignment:
    """Give the comparison back; it is never served to this annotator again.
    Skipping twice is a no-op; skipping a labelled assignment is a Conflict."""
    now = _now(now)
    with transaction.atomic(), prepared_cursor() as cursor:
        # Same lock as label_submit, so a skip and a label of the same assignment
        # cannot both succeed.
        _lock_comparison_of(cursor, assignment_id, annotator.pk)
        cursor.execute(_SKIP_SQL, {"assignment_id": assignment_id, "now": now})
        row = cursor.fetchone()
        if row is not None:
            return _assignment(row)
        assignment = Assignment.objects.get(pk=assignment_id)
        if assignment.state == Assignment.State.SKIPPED:
            return assignment
        raise Conflict("This assignment is already labelled.")
