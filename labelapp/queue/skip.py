"""``skip``: give a leased comparison back; it is never served to the annotator again."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labelapp.db import prepared_cursor
from labelapp.errors import Conflict, ValidationFailed
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
SET state = 'skipped', finished_at = %(now)s, skip_reason = %(reason)s
WHERE id = %(assignment_id)s AND state IN ('leased', 'expired')
RETURNING {", ".join(_ASSIGNMENT_COLUMNS)}, skip_reason
"""


SKIP_REASON_MAX_CHARS = 200


def skip_reason_problem(reason: object) -> str | None:
    """What is wrong with a skip reason, or None (the one check, used by the API)."""
    if not isinstance(reason, str):
        return "reason: must be a string"
    if len(reason) > SKIP_REASON_MAX_CHARS:
        return f"reason: at most {SKIP_REASON_MAX_CHARS} characters, got {len(reason)}"
    if "\x00" in reason or any(0xD800 <= ord(ch) <= 0xDFFF for ch in reason):
        return "reason: null or surrogate characters are not allowed"
    return None


def assignment_skip(
    *,
    assignment_id: int,
    annotator: AbstractBaseUser,
    reason: str = "",
    now: datetime | None = None,
) -> Assignment:
    """Give the comparison back; it is never served to this annotator again.
    ``reason`` (optional, at most 200 characters) is kept for the project's admins.
    Skipping twice is a no-op; skipping a labelled assignment is a Conflict."""
    if problem := skip_reason_problem(reason):
        raise ValidationFailed(problem)
    reason = reason.strip()
    now = _now(now)
    with transaction.atomic(), prepared_cursor() as cursor:
        # Same lock as label_submit, so a skip and a label of the same assignment
        # cannot both succeed.
        _lock_comparison_of(cursor, assignment_id, annotator.pk)
        cursor.execute(
            _SKIP_SQL, {"assignment_id": assignment_id, "now": now, "reason": reason}
        )
        row = cursor.fetchone()
        if row is not None:
            assignment = _assignment(row)
            assignment.skip_reason = row[-1]  # loaded: the API shows it, no query
            return assignment
        assignment = Assignment.objects.get(pk=assignment_id)
        if assignment.state == Assignment.State.SKIPPED:
            return assignment
        raise Conflict("This assignment is already labelled.")
