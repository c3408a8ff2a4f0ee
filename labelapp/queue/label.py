"""``label``: store an annotator's label for their lease, with the comparison's new
count, status and aggregates, in one transaction under the comparison lock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labelapp.db import loaded, prepared_cursor
from labelapp.errors import Conflict, ValidationFailed
from labelapp.loop.triggers import training_check_soon
from labelapp.models import Assignment, Choice, Comparison, Label
from labelapp.queue.assignments import (
    _ASSIGNMENT_COLUMNS,
    _assignment,
    _columns,
    _lock_comparison_of,
    _now,
)
from labelapp.queue.label_input import label_input_problems
from labelapp.services.aggregates import aggregate_labels

# Display choice -> canonical choice when the pair was shown swapped (B on the left).
_SWAP = {Choice.A: Choice.B, Choice.B: Choice.A}
_NO_STRENGTH = frozenset({Choice.TIE.value, Choice.BOTH_BAD.value})
_P_A = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: None}


def canonical_choice(display_choice: str, swapped: bool) -> str:
    """The choice in stored (A = lower response id) terms."""
    choice = Choice(display_choice)
    return _SWAP.get(choice, choice).value if swapped else choice.value


def display_choice(canonical: str, swapped: bool) -> str:
    """Inverse of canonical_choice (the swap is its own inverse)."""
    return canonical_choice(canonical, swapped)


def _validate_label_input(values: dict[str, object]) -> None:
    problems = label_input_problems(values)
    if problems:
        raise ValidationFailed(
            "; ".join(
                f"{k}: {' '.join(p.message for p in found)}"
                for k, found in problems.items()
            )
        )


# Statement 2 of ``label``, with the comparison locked, so on a snapshot that sees
# everything committed before we got the lock: the assignment, the other annotators'
# live leases on the comparison (the late-label slot check), and the labels the
# aggregates are computed from. Every writer of these rows holds the comparison lock,
# except lease expiry (leased -> expired), which label_submit treats like a lease
# whose time is up anyway.
_ASSIGNMENT_SQL = f"""
SELECT {_columns("a")},
    (
        SELECT count(*) FROM labelapp_assignment act
        WHERE act.comparison_id = a.comparison_id
          AND act.annotator_id <> a.annotator_id
          AND act.state = 'leased'
          AND act.expires_at > %(now)s
    ),
    l.choices, l.p_as, l.strengths
FROM labelapp_assignment a
CROSS JOIN LATERAL (
    SELECT array_agg(choice ORDER BY id) AS choices,
           array_agg(p_a ORDER BY id) AS p_as,
           array_agg(strength ORDER BY id) AS strengths
    FROM labelapp_label
    WHERE comparison_id = a.comparison_id AND review_state <> 'rejected'
) l
WHERE a.id = %(assignment_id)s
"""

_LABEL_COLUMNS = (
    "comparison_id",
    "annotator_id",
    "assignment_id",
    "choice",
    "strength",
    "p_a",
    "rationale",
    "duration_ms",
    "shown_swapped",
    "idempotency_key",
    "source",
    "review_state",
    "review_note",
    "reviewed_by_id",
    "reviewed_at",
    "created_at",
)

# Statement 3 of ``label``: the whole write in one statement. The label goes in; only
# if it did, the assignment is marked labelled and the comparison gets its new count,
# status and aggregates (computed from statement 2's labels plus this one, under the
# comparison lock, so nothing can change them in between). The unique (comparison,
# annotator) and (assignment) constraints are the last line of defence: on a conflict
# DO NOTHING inserts nothing, so nothing of this write happens and the caller raises.
_LABEL_WRITE_SQL = f"""
WITH l AS (
    INSERT INTO labelapp_label ({", ".join(_LABEL_COLUMNS)})
    VALUES ({", ".join(f"%({c})s" for c in _LABEL_COLUMNS)})
    ON CONFLICT DO NOTHING
    RETURNING id
),
labelled AS (
    UPDATE labelapp_assignment
    SET state = 'labelled', finished_at = %(now)s
    WHERE id = %(assignment_id)s AND EXISTS (SELECT 1 FROM l)
),
counted AS (
    UPDATE labelapp_comparison
    SET labels_count = %(labels_count)s,
        status = CASE WHEN %(complete)s THEN 'complete' ELSE status END,
        completed_at = CASE WHEN %(complete)s THEN %(now)s ELSE completed_at END,
        p_a = %(agg_p_a)s, majority = %(agg_majority)s,
        agreement = %(agg_agreement)s, mean_strength = %(agg_mean_strength)s,
        both_bad_count = %(agg_both_bad_count)s
    WHERE id = %(comparison_id)s AND EXISTS (SELECT 1 FROM l)
)
SELECT id FROM l
"""


def _same_submission(
    label: Label, choice: str, strength: int | None, idempotency_key: str
) -> bool:
    if idempotency_key and label.idempotency_key:
        return idempotency_key == label.idempotency_key
    return label.choice == choice and label.strength == strength


def label_submit(
    *,
    assignment_id: int,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int | None = None,
    rationale: str = "",
    duration_ms: int | None = None,
    idempotency_key: str = "",
    now: datetime | None = None,
) -> tuple[Label, bool]:
    """Store the annotator's label for their assignment. ``choice`` is in display
    terms (what was on the left is "a"). Returns (label, created); a repeat of a stored
    submission returns the stored label with created=False.

    ``strength`` (1-4) is required for a and b; for tie and both_bad it is stored as
    null, and one sent with them is dropped rather than refused: it carries no
    meaning, and clients written when the API required it send 1 there."""
    now = _now(now)
    if choice in _NO_STRENGTH:
        strength = None
    _validate_label_input(
        {
            "choice": choice,
            "strength": strength,
            "rationale": rationale,
            "duration_ms": duration_ms,
            "idempotency_key": idempotency_key,
        }
    )
    with transaction.atomic(), prepared_cursor() as cursor:
        # Race closed: the same label arriving twice at once (double click, client
        # retry). Both wait on the comparison lock; the second then reads the
        # assignment (statement 2, a fresh snapshot) labelled and returns the first
        # one's label.
        comparison_id, project_id, status, labels_count, labels_required = (
            _lock_comparison_of(cursor, assignment_id, annotator.pk)
        )
        cursor.execute(_ASSIGNMENT_SQL, {"assignment_id": assignment_id, "now": now})
        row = cursor.fetchone()
        assignment = _assignment(row)
        others, choices, p_as, strengths = row[len(_ASSIGNMENT_COLUMNS) :]
        stored = canonical_choice(choice, assignment.swapped)

        if assignment.state == Assignment.State.LABELLED:
            label = Label.objects.get(assignment=assignment)
            if _same_submission(label, stored, strength, idempotency_key):
                return label, False
            raise Conflict("This assignment is already labelled with another answer.")
        if assignment.state == Assignment.State.SKIPPED:
            raise Conflict("This assignment was skipped; it can no longer be labelled.")

        if assignment.state == Assignment.State.EXPIRED or assignment.expires_at <= now:
            # Race closed: a late label on a lapsed lease. We hold the comparison lock,
            # so nobody can take or fill a slot while we decide; the label is kept
            # only if the slot is still free, otherwise the comparison would end up
            # with more than k labels. (The Conflict rolls the transaction back, so
            # the assignment is left as it is; expiry closes it.)
            if (
                status != Comparison.Status.OPEN
                or labels_count + others >= labels_required
            ):
                raise Conflict(
                    "Your lease on this comparison expired and its slot was taken by "
                    "another annotator; the label was not saved. Fetch the next one."
                )
        elif status != Comparison.Status.OPEN:
            # Only possible if an admin retired or completed it by hand.
            raise Conflict("This comparison is no longer open for labels.")

        values: dict[str, Any] = {
            "comparison_id": comparison_id,
            "annotator_id": annotator.pk,
            "assignment_id": assignment.pk,
            "choice": stored,
            "strength": strength,
            "p_a": _P_A[Choice(stored)],
            "rationale": rationale,
            "duration_ms": duration_ms,
            "shown_swapped": assignment.swapped,
            "idempotency_key": idempotency_key,
            "source": Label.Source.HUMAN.value,
            "review_state": Label.ReviewState.PENDING.value,
            "review_note": "",
            "reviewed_by_id": None,
            "reviewed_at": None,
            "created_at": now,  # the injected clock, like finished_at and completed_at
        }
        # The row is locked and was read after locking, so the count is current;
        # the new label is pending review, so it enters the aggregates.
        labels_count += 1
        # The k-th label completes the comparison in the same statement, so it can
        # never be leased again after the label is visible.
        complete = labels_count >= labels_required
        agg = aggregate_labels(
            [
                *zip(choices or (), p_as or (), strengths or (), strict=True),
                (stored, values["p_a"], strength),
            ]
        )
        cursor.execute(
            _LABEL_WRITE_SQL,
            {
                **values,
                "now": now,
                "labels_count": labels_count,
                "complete": complete,
                "agg_p_a": agg.p_a,
                "agg_majority": agg.majority,
                "agg_agreement": agg.agreement,
                "agg_mean_strength": agg.mean_strength,
                "agg_both_bad_count": agg.both_bad_count,
            },
        )
        written = cursor.fetchone()
        if written is None:
            raise Conflict("You already labelled this comparison.")
        if complete:
            # A completed comparison may bring the project to its retraining
            # threshold; the check runs after commit, on the default queue, and
            # starts training at most once (one active job per project and kind);
            # if the broker is down, beat runs the same check periodically.
            transaction.on_commit(lambda: training_check_soon(project_id), robust=True)
        return loaded(Label, {"id": written[0], **values}), True
