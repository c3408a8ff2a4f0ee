"""The annotation queue: lease a comparison to an annotator, take their label, release.

Every function here is safe with many annotators hitting PostgreSQL at once. The
invariants, and where each race that could break them is closed:

* a comparison is never leased to more annotators at once than the labels it still
  needs: ``labels_count + active leases < labels_required``, checked *after* the
  comparison row is locked (``_has_free_slot``);
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

The hot paths are hand-written SQL, a few statements each (``next``: lock membership,
read held leases, pick a candidate, lease it; ``label``: lock the comparison, read the
assignment and the comparison's labels, write everything), because per-request cost
is dominated by round trips and ORM overhead, not by the queries themselves. Each
statement that must see data committed while we waited for a lock is a *separate*
statement after the locking one: in READ COMMITTED a statement reads one snapshot,
and a lock wait does not refresh what its subqueries saw.

Clock (``now``) and randomness (``rng``) are injected so tests control them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from labelapp.aggregation import aggregate_labels
from labelapp.errors import Conflict, NotFound, ValidationFailed
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


# What the annotator is shown, joined onto a leased assignment ``a`` so the lease and
# its payload come back in one statement (selectors.assignment_payload uses them).
_PAYLOAD_COLUMNS = "c.prompt_id, c.response_a_id, c.response_b_id, p.messages, " + (
    "ra.text, rb.text"
)
_PAYLOAD_JOIN = """
JOIN labelapp_comparison c ON c.id = a.comparison_id
JOIN labelapp_prompt p ON p.id = c.prompt_id
JOIN labelapp_response ra ON ra.id = c.response_a_id
JOIN labelapp_response rb ON rb.id = c.response_b_id
"""

# Statement 1 of ``next``: the annotator's membership row, locked, with the project
# settings the lease needs (one query instead of project + membership reads).
# Race closed: the same annotator calling next twice at once (double click, two
# tabs). Locking their membership row serialises their calls, so the second sees the
# lease the first made (statement 2 runs after this lock, on a fresh snapshot) and
# returns it instead of taking a second one.
_MEMBERSHIP_SQL = """
SELECT m.paused, pr.gold_rate, pr.lease_seconds
FROM labelapp_membership m
JOIN labelapp_project pr ON pr.id = m.project_id
WHERE m.project_id = %(project_id)s AND m.user_id = %(user_id)s
FOR UPDATE OF m
"""

# Statement 2 of ``next``: the annotator's live leases in the project, oldest first,
# with their payloads; and, in the same statement, their own leases that ran out are
# closed (theirs to close; others' are closed by the comparison they sit on, in
# statement 4, or by leases_reclaim()). The UPDATE and the SELECT touch disjoint rows
# (expires_at <= now vs > now), so sharing a snapshot is harmless.
_HELD_SQL = f"""
WITH lapsed AS (
    UPDATE labelapp_assignment
    SET state = 'expired', finished_at = %(now)s
    WHERE annotator_id = %(user_id)s AND project_id = %(project_id)s
      AND state = 'leased' AND expires_at <= %(now)s
)
SELECT {_columns("a")}, {_PAYLOAD_COLUMNS}
FROM labelapp_assignment a
{_PAYLOAD_JOIN}
WHERE a.annotator_id = %(user_id)s AND a.project_id = %(project_id)s
  AND a.state = 'leased' AND a.expires_at > %(now)s
ORDER BY a.leased_at, a.id
"""

# Statement 3 of ``next``: the candidate query. Walks comparison_queue_idx (or
# comparison_gold_queue_idx) in queue order: priority, then comparisons already
# started (finish what is begun, so complete pairs reach training sooner), then
# random_key. The free-slot test here reads a snapshot taken before the row lock; it
# is a cheap pre-filter only and is re-checked after locking (statement 4). is_gold is
# a literal (one prepared statement each), so the gold pass keeps its partial index.
_CANDIDATE_SQL_TEMPLATE = """
SELECT c.id
FROM labelapp_comparison c
WHERE c.project_id = %(project_id)s
  AND c.status = 'open'
  AND c.is_gold = {gold}
  AND NOT (c.id = ANY(%(exclude)s))
  AND NOT EXISTS (
      SELECT 1 FROM labelapp_assignment mine
      WHERE mine.comparison_id = c.id
        AND mine.annotator_id = %(user_id)s
        AND (
            mine.state IN ('labelled', 'skipped')
            -- a comparison the annotator already holds (the page's prefetch asks
            -- for a second lease; it must be a different pair)
            OR (mine.state = 'leased' AND mine.expires_at > %(now)s)
        )
  )
  AND c.labels_count + (
      SELECT count(*) FROM labelapp_assignment act
      WHERE act.comparison_id = c.id
        AND act.state = 'leased'
        AND act.expires_at > %(now)s
  ) < c.labels_required
ORDER BY c.priority DESC, c.labels_count DESC, c.random_key
LIMIT 1
FOR UPDATE OF c SKIP LOCKED
"""
_CANDIDATE_SQL = {
    gold: _CANDIDATE_SQL_TEMPLATE.replace("{gold}", "true" if gold else "false")
    for gold in (True, False)
}

# Statement 4 of ``next``, run with the candidate's row locked (statement 3): re-check
# the free slot, close others' lapsed leases on it, take the lease, return it with its
# payload. No row back: the slot is gone (or see ON CONFLICT below); step on.
#
# Race closed (free slot): two annotators' ``next`` evaluate the candidate query on
# the same snapshot, both see one free slot; the first leases and commits; the second
# then locks the row. PostgreSQL re-checks only the comparison row's own columns after
# the lock wait (a new lease does not touch that row), so without this recount, on
# this statement's fresh snapshot, the second would take a slot that no longer
# exists. The recount and the reclaim share a snapshot but not rows (expires_at > now
# vs <= now).
#
# Re-leasing: (comparison, annotator) is unique, so an expired earlier lease of this
# annotator on this comparison is re-used by ON CONFLICT DO UPDATE. Race closed: the
# candidate query excluded the comparisons they labelled or skipped, but on its
# snapshot; a late label (label_submit on an expired lease) may commit between that
# snapshot and our lock. The DO UPDATE ... WHERE state = 'expired' re-checks on the
# current row, so a labelled or skipped assignment is never turned back into a lease.
# The annotator's own lapsed leases were closed by statement 2 (so "reclaimed" and
# the upsert never touch the same row in one statement).
_LEASE_SQL = f"""
WITH free AS (
    SELECT c.id
    FROM labelapp_comparison c
    WHERE c.id = %(comparison_id)s
      AND c.status = 'open'
      AND c.labels_count + (
          SELECT count(*) FROM labelapp_assignment act
          WHERE act.comparison_id = c.id
            AND act.state = 'leased'
            AND act.expires_at > %(now)s
      ) < c.labels_required
),
reclaimed AS (
    UPDATE labelapp_assignment
    SET state = 'expired', finished_at = %(now)s
    WHERE comparison_id = %(comparison_id)s AND annotator_id <> %(user_id)s
      AND state = 'leased' AND expires_at <= %(now)s
),
a AS (
    INSERT INTO labelapp_assignment
        (comparison_id, annotator_id, project_id, state, swapped, leased_at,
         expires_at, finished_at)
    SELECT free.id, %(user_id)s, %(project_id)s, 'leased', %(swapped)s, %(now)s,
           %(expires_at)s, NULL
    FROM free
    ON CONFLICT (comparison_id, annotator_id) DO UPDATE
    SET state = 'leased', project_id = EXCLUDED.project_id,
        swapped = EXCLUDED.swapped, leased_at = EXCLUDED.leased_at,
        expires_at = EXCLUDED.expires_at, finished_at = NULL
    WHERE labelapp_assignment.state = 'expired'
    RETURNING {", ".join(_ASSIGNMENT_COLUMNS)}
)
SELECT {_columns("a")}, {_PAYLOAD_COLUMNS}
FROM a
{_PAYLOAD_JOIN}
"""


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _assignment(row: Sequence[Any]) -> Assignment:
    """Assignment from a row that starts with ``_ASSIGNMENT_COLUMNS``."""
    n = len(_ASSIGNMENT_COLUMNS)
    return loaded(Assignment, dict(zip(_ASSIGNMENT_COLUMNS, row[:n], strict=True)))


def _assignment_with_payload(row: Sequence[Any]) -> Assignment:
    """Assignment from ``_columns`` + ``_PAYLOAD_COLUMNS``, with its comparison,
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


def _pick_candidate(
    *, project_id: int, user_id: int, gold: bool, now: datetime, exclude: list[int]
) -> int | None:
    """The id of the next candidate, its row locked (bench/naive_queue.py swaps this
    function for the naive query to measure the baseline)."""
    with prepared_cursor() as cursor:
        cursor.execute(
            _CANDIDATE_SQL[gold],
            {
                "project_id": project_id,
                "user_id": user_id,
                "now": now,
                "exclude": exclude,
            },
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def _lease_next(
    *,
    project_id: int,
    user_id: int,
    gold: bool,
    now: datetime,
    expires_at: datetime,
    swapped: list[bool],
    rng: random.Random,
) -> Assignment | None:
    tried: list[int] = []
    for _ in range(_MAX_CANDIDATE_TRIES):
        comparison_id = _pick_candidate(
            project_id=project_id, user_id=user_id, gold=gold, now=now, exclude=tried
        )
        if comparison_id is None:
            return None
        if not swapped:  # drawn once per call, as late as possible (tests seed it)
            swapped.append(rng.random() < 0.5)
        with prepared_cursor() as cursor:
            cursor.execute(
                _LEASE_SQL,
                {
                    "comparison_id": comparison_id,
                    "project_id": project_id,
                    "user_id": user_id,
                    "now": now,
                    "expires_at": expires_at,
                    "swapped": swapped[0],
                },
            )
            row = cursor.fetchone()
        if row is not None:
            return _assignment_with_payload(row)
        # Filled up between our snapshot and our lock: keep it locked (harmless,
        # released at commit) and step to the next candidate.
        tried.append(comparison_id)
    return None


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
    ids = {"project_id": project_id, "user_id": annotator.pk, "now": now}
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_MEMBERSHIP_SQL, ids)
        membership = cursor.fetchone()
        if membership is None:
            raise NotFound("Project not found.")
        paused, gold_rate, lease_seconds = membership
        if paused:
            return None

        cursor.execute(_HELD_SQL, ids)
        held = cursor.fetchall()
        excluded = set(exclude_assignment_ids)
        for row in held:
            if row[0] not in excluded:
                return _assignment_with_payload(row)  # refresh-safe: same lease
        # Every lease held is one the caller already has: lease another only below
        # the cap, so a page (or a buggy client) cannot hoard comparisons.
        if len(held) >= max_leases:
            return None

        want_gold = gold_rate > 0 and rng.random() < gold_rate
        expires_at = now + timedelta(seconds=lease_seconds)
        swapped: list[bool] = []
        # Gold first when drawn, then the other kind as a fallback, so nothing that
        # still needs labels is withheld just because of the draw.
        for gold in (want_gold, not want_gold):
            assignment = _lease_next(
                project_id=project_id,
                user_id=annotator.pk,
                gold=gold,
                now=now,
                expires_at=expires_at,
                swapped=swapped,
                rng=rng,
            )
            if assignment is not None:
                return assignment
        return None


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
            transaction.on_commit(
                lambda: _check_triggers_later(project_id), robust=True
            )
        return loaded(Label, {"id": written[0], **values}), True


# Trigger checks, coalesced per process: publishing a task costs ~1-3 ms of CPU, and
# at hundreds of labels/s a comparison completes every few milliseconds. The check
# counts everything committed when it runs, so one check scheduled to start *after*
# a commit covers that commit: a completion that finds such a check pending (due more
# than _TRIGGER_MARGIN from now, a margin for clock skew between machines) sends
# nothing. Beat runs the same check periodically as the backstop.
_TRIGGER_DELAY = 1.0
_TRIGGER_MARGIN = 0.25
_trigger_due: dict[int, float] = {}


def _check_triggers_later(project_id: int) -> None:
    from labelapp.tasks import check_triggers

    now = time.monotonic()
    if _trigger_due.get(project_id, 0.0) - now > _TRIGGER_MARGIN:
        return
    _trigger_due[project_id] = now + _TRIGGER_DELAY
    check_triggers.apply_async(args=[project_id], countdown=_TRIGGER_DELAY)


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
