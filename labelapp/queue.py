"""The annotation queue: lease a comparison to an annotator, take their label, release.

Every function here is safe with many annotators hitting PostgreSQL at once. The
invariants, and where each race that could break them is closed:

* a comparison is never leased to more annotators at once than the labels it still
  needs: ``labels_count + active leases < labels_required``, checked *after* the
  comparison row is locked (the lease statement in labelapp_queue_next);
* an annotator never gets a comparison they labelled or skipped (filter in the
  candidate query, backed by the unique (comparison, annotator) constraints);
* one annotator asking twice (double click, two tabs) gets the same lease: their
  ``next`` calls are serialised on their Membership row;
* labels_count, status and the aggregates change in the same transaction as the label,
  under the comparison row lock, so a reader never sees a label without its count.

Lock order, everywhere: Membership -> Comparison -> Assignment. Nothing waits for a
comparison lock while holding an assignment lock, so these paths cannot deadlock;
``next`` only takes comparison locks with SKIP LOCKED, so annotators never queue
behind each other's candidate rows.

The hot paths are hand-written SQL, because per-request cost is dominated by round
trips and ORM overhead, not by the queries themselves. ``next`` is one call of a
PostgreSQL function (migration 0005: lock membership, close lapsed leases, resume a
held lease, pick a candidate, lease it); ``label`` is a few statements (lock the
comparison, read the assignment and the comparison's labels, write everything). Each
statement that must see data committed while we waited for a lock is a *separate*
statement after the locking one: in READ COMMITTED a statement reads one snapshot,
and a lock wait does not refresh what its subqueries saw.

Clock (``now``) and randomness (``rng``) are injected so tests control them.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from labelapp.aggregation import aggregate_labels
from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.loop.triggers import training_check_soon
from labelapp.models import (
    Assignment,
    Choice,
    Comparison,
    Label,
    Project,
    Prompt,
    Response,
)
from labelapp.rows import loaded, prepared_cursor

# Display choice -> canonical choice when the pair was shown swapped (B on the left).
_SWAP = {Choice.A: Choice.B, Choice.B: Choice.A}
_P_A = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: None}
RATIONALE_MAX_CHARS = 10_000

# How many locked-but-full candidates ``next`` steps over before giving up on a pass.
# Each step is one short indexed query; in practice one or two suffice.
_MAX_CANDIDATE_TRIES = 20

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


# ``next`` is one call of labelapp_queue_next (migration 0005, which holds the SQL and
# a comment at each statement on the race it closes): lock the membership row, close
# the annotator's lapsed leases, resume a held lease, else walk the queue
# (labelapp_queue_candidate: FOR UPDATE SKIP LOCKED) and lease the first candidate
# whose free slot survives the re-check under its row lock. One round trip instead of
# six; each statement in the function still takes its own snapshot (READ COMMITTED,
# VOLATILE), as the separate round trips did. The random draws are made here, before
# the call, so tests control them: first the gold draw, then the swap.
_NEXT_SQL = """
SELECT * FROM labelapp_queue_next(
    %(project_id)s::bigint, %(user_id)s::integer, %(now)s::timestamptz,
    %(exclude)s::bigint[], %(max_leases)s::integer, %(gold_draw)s::float8,
    %(swapped)s::boolean, %(max_tries)s::integer)
"""


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _assignment(row: Sequence[Any]) -> Assignment:
    """Assignment from a row that starts with ``_ASSIGNMENT_COLUMNS``."""
    n = len(_ASSIGNMENT_COLUMNS)
    return loaded(Assignment, dict(zip(_ASSIGNMENT_COLUMNS, row[:n], strict=True)))


def _assignment_with_payload(row: Sequence[Any]) -> Assignment:
    """Assignment from ``_ASSIGNMENT_COLUMNS`` + the payload (prompt id, response
    ids, messages, texts: labelapp_queue_next's columns), with its comparison,
    prompt and responses attached, so assignment_payload needs no query."""
    assignment = _assignment(row)
    prompt_id, a_id, b_id, messages, a_text, b_text = row[len(_ASSIGNMENT_COLUMNS) :]
    messages_field = Prompt._meta.get_field("messages")
    comparison = loaded(
        Comparison,
        {
            "id": assignment.comparison_id,
            "prompt_id": prompt_id,
            "response_a_id": a_id,
            "response_b_id": b_id,
        },
    )
    comparison.prompt = loaded(
        Prompt,
        {
            "id": prompt_id,
            "messages": messages_field.from_db_value(messages, None, connection),
        },
    )
    comparison.response_a = loaded(Response, {"id": a_id, "text": a_text})
    comparison.response_b = loaded(Response, {"id": b_id, "text": b_text})
    assignment.comparison = comparison
    return assignment


def comparison_next_for(
    *,
    annotator: AbstractBaseUser,
    project: Project | int,
    now: datetime | None = None,
    rng: random.Random | None = None,
    exclude_assignment_ids: Collection[int] = (),
    max_leases: int = 1,
) -> Assignment | None:
    """Lease the next comparison of ``project`` (a Project or its id) to
    ``annotator``; None when nothing is left for them (or their membership is
    paused). Raises NotFound for non-members and unknown projects. The returned
    assignment carries its comparison, prompt and responses (assignment_payload
    serves them without a query).

    ``exclude_assignment_ids`` and ``max_leases`` serve the annotator page's prefetch:
    it shows one pair while holding the next one, so it asks for a lease other than
    the ones it names, and may hold up to ``max_leases`` at once (None when at the
    cap). The defaults keep the API's behaviour: one lease, resumed until done."""
    now = _now(now)
    rng = rng or random.Random()
    project_id = project if isinstance(project, int) else project.pk
    gold_draw = rng.random()
    swapped = rng.random() < 0.5
    with prepared_cursor() as cursor:
        cursor.execute(
            _NEXT_SQL,
            {
                "project_id": project_id,
                "user_id": annotator.pk,
                "now": now,
                "exclude": sorted(exclude_assignment_ids),
                "max_leases": max_leases,
                "gold_draw": gold_draw,
                "swapped": swapped,
                "max_tries": _MAX_CANDIDATE_TRIES,
            },
        )
        row = cursor.fetchone()
    outcome = row[0]
    if outcome == "not_found":
        raise NotFound("Project not found.")
    if outcome == "none":
        return None
    return _assignment_with_payload(row[1:])


def leases_reclaim(*, now: datetime | None = None, batch: int = 5000) -> int:
    """Mark expired leases as expired; returns how many. Safe to run concurrently with
    itself and with the queue: rows being changed by someone else are skipped (they
    are picked up on the next run), so two reclaimers never wait on each other."""
    now = _now(now)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Assignment.objects.select_for_update(skip_locked=True)
                .filter(state=Assignment.State.LEASED, expires_at__lte=now)
                .values_list("id", flat=True)[:batch]
            )
            if not ids:
                return total
            # Re-check the state: a row we locked may have been labelled just before.
            total += Assignment.objects.filter(
                id__in=ids, state=Assignment.State.LEASED, expires_at__lte=now
            ).update(state=Assignment.State.EXPIRED, finished_at=now)
        if len(ids) < batch:
            return total


def canonical_choice(display_choice: str, swapped: bool) -> str:
    """The choice in stored (A = lower response id) terms."""
    choice = Choice(display_choice)
    return _SWAP.get(choice, choice).value if swapped else choice.value


def display_choice(canonical: str, swapped: bool) -> str:
    """Inverse of canonical_choice (the swap is its own inverse)."""
    return canonical_choice(canonical, swapped)


def _validate_label_input(
    choice: str, strength: int, rationale: str, duration_ms: int | None
) -> None:
    errors: dict[str, str] = {}
    if choice not in Choice.values:
        errors["choice"] = f"must be one of {', '.join(Choice.values)}"
    if not isinstance(strength, int) or not 1 <= strength <= 4:
        errors["strength"] = "must be an integer from 1 to 4"
    if len(rationale) > RATIONALE_MAX_CHARS:
        errors["rationale"] = f"at most {RATIONALE_MAX_CHARS} characters"
    if duration_ms is not None and (
        not isinstance(duration_ms, int) or duration_ms < 0
    ):
        errors["duration_ms"] = "must be a non-negative integer"
    if errors:
        raise ValidationFailed("; ".join(f"{k}: {v}" for k, v in errors.items()))


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


def _lock_comparison_of(cursor: Any, assignment_id: int, user_id: int) -> tuple:
    cursor.execute(
        _LOCK_COMPARISON_SQL, {"assignment_id": assignment_id, "user_id": user_id}
    )
    row = cursor.fetchone()
    if row is None:
        raise NotFound("Assignment not found.")
    return row


def _same_submission(
    label: Label, choice: str, strength: int, idempotency_key: str
) -> bool:
    if idempotency_key and label.idempotency_key:
        return idempotency_key == label.idempotency_key
    return label.choice == choice and label.strength == strength


def label_submit(
    *,
    assignment_id: int,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int,
    rationale: str = "",
    duration_ms: int | None = None,
    idempotency_key: str = "",
    now: datetime | None = None,
) -> tuple[Label, bool]:
    """Store the annotator's label for their assignment. ``choice`` is in display
    terms (what was on the left is "a"). Returns (label, created); a repeat of a stored
    submission returns the stored label with created=False."""
    now = _now(now)
    _validate_label_input(choice, strength, rationale, duration_ms)
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
            "created_at": timezone.now(),  # as auto_now_add would set it
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
