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

Clock (``now``) and randomness (``rng``) are injected so tests control them.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labelapp.aggregation import comparison_aggregate_refresh
from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.models import Assignment, Choice, Comparison, Label, Membership, Project

# Display choice -> canonical choice when the pair was shown swapped (B on the left).
_SWAP = {Choice.A: Choice.B, Choice.B: Choice.A}
_P_A = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: None}
RATIONALE_MAX_CHARS = 10_000

# How many locked-but-full candidates ``next`` steps over before giving up on a pass.
# Each step is one short indexed query; in practice one or two suffice.
_MAX_CANDIDATE_TRIES = 20

# The candidate query. Walks comparison_queue_idx (or comparison_gold_queue_idx) in
# queue order: priority, then comparisons already started (finish what is begun, so
# complete pairs reach training sooner), then random_key. The free-slot test here
# reads a snapshot taken before the row lock; it is a cheap pre-filter only and is
# re-checked after locking (see _has_free_slot).
_CANDIDATE_SQL = """
SELECT c.id
FROM labelapp_comparison c
WHERE c.project_id = %(project_id)s
  AND c.status = 'open'
  AND c.is_gold = %(gold)s
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


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _active_leases(
    comparison_id: int, now: datetime, exclude_annotator_id: int | None = None
) -> int:
    qs = Assignment.objects.filter(
        comparison_id=comparison_id, state=Assignment.State.LEASED, expires_at__gt=now
    )
    if exclude_annotator_id is not None:
        qs = qs.exclude(annotator_id=exclude_annotator_id)
    return qs.count()


def _has_free_slot(comparison: Comparison, now: datetime) -> bool:
    """Called with the comparison row locked. In READ COMMITTED this statement takes a
    fresh snapshot, so it sees every lease committed before we got the lock.

    Race closed: two annotators' ``next`` evaluate the candidate query on the same
    snapshot, both see one free slot; the first leases and commits; the second then
    locks the row. PostgreSQL re-checks only the comparison row's own columns after the
    lock wait (a new lease does not touch that row), so without this recount the
    second would take a slot that no longer exists."""
    return (
        comparison.status == Comparison.Status.OPEN
        and comparison.labels_count + _active_leases(comparison.pk, now)
        < comparison.labels_required
    )


def _pick_candidate(
    *, project_id: int, user_id: int, gold: bool, now: datetime
) -> Comparison | None:
    tried: list[int] = []
    for _ in range(_MAX_CANDIDATE_TRIES):
        with connection.cursor() as cursor:
            cursor.execute(
                _CANDIDATE_SQL,
                {
                    "project_id": project_id,
                    "user_id": user_id,
                    "gold": gold,
                    "now": now,
                    "exclude": tried,
                },
            )
            row = cursor.fetchone()
        if row is None:
            return None
        # The row is locked now (FOR UPDATE); re-read it so the counters are current.
        comparison = Comparison.objects.get(pk=row[0])
        if _has_free_slot(comparison, now):
            return comparison
        # Filled up between our snapshot and our lock: keep it locked (harmless,
        # released at commit) and step to the next candidate.
        tried.append(comparison.pk)
    return None


def _reclaim_expired_on(comparison_id: int, now: datetime) -> None:
    """Lazy reclaim on the comparison we are about to lease (its row is locked)."""
    Assignment.objects.filter(
        comparison_id=comparison_id, state=Assignment.State.LEASED, expires_at__lte=now
    ).update(state=Assignment.State.EXPIRED, finished_at=now)


def comparison_next_for(
    *,
    annotator: AbstractBaseUser,
    project: Project,
    now: datetime | None = None,
    rng: random.Random | None = None,
    exclude_assignment_ids: Collection[int] = (),
    max_leases: int = 1,
) -> Assignment | None:
    """Lease the next comparison of ``project`` to ``annotator``; None when nothing is
    left for them (or their membership is paused). Raises NotFound for non-members.

    ``exclude_assignment_ids`` and ``max_leases`` serve the annotator page's prefetch:
    it shows one pair while holding the next one, so it asks for a lease other than
    the ones it names, and may hold up to ``max_leases`` at once (None when at the
    cap). The defaults keep the API's behaviour: one lease, resumed until done."""
    now = _now(now)
    rng = rng or random.Random()
    with transaction.atomic():
        # Race closed: the same annotator calling next twice at once (double click,
        # two tabs). Locking their membership row serialises their calls, so the
        # second sees the lease the first made and returns it instead of a second one.
        membership = (
            Membership.objects.select_for_update()
            .filter(project=project, user=annotator)
            .first()
        )
        if membership is None:
            raise NotFound("Project not found.")
        if membership.paused:
            return None

        held = Assignment.objects.filter(
            annotator=annotator,
            project=project,
            state=Assignment.State.LEASED,
            expires_at__gt=now,
        )
        current = (
            held.exclude(pk__in=list(exclude_assignment_ids))
            .order_by("leased_at")
            .first()
        )
        if current is not None:
            return current  # refresh-safe: same lease, same orientation
        # Every lease held is one the caller already has: lease another only below
        # the cap, so a page (or a buggy client) cannot hoard comparisons.
        if held.count() >= max_leases:
            return None

        # The annotator's own leases that ran out are theirs to close; others' are
        # closed by the comparison they sit on (below) or by leases_reclaim().
        Assignment.objects.filter(
            annotator=annotator,
            project=project,
            state=Assignment.State.LEASED,
            expires_at__lte=now,
        ).update(state=Assignment.State.EXPIRED, finished_at=now)

        want_gold = project.gold_rate > 0 and rng.random() < project.gold_rate
        comparison = None
        # Gold first when drawn, then the other kind as a fallback, so nothing that
        # still needs labels is withheld just because of the draw.
        for gold in (want_gold, not want_gold):
            comparison = _pick_candidate(
                project_id=project.pk, user_id=annotator.pk, gold=gold, now=now
            )
            if comparison is not None:
                break
        if comparison is None:
            return None

        _reclaim_expired_on(comparison.pk, now)
        expires_at = now + timedelta(seconds=project.lease_seconds)
        swapped = rng.random() < 0.5
        # An expired earlier lease of this annotator on this comparison is re-used:
        # (comparison, annotator) is unique, and the candidate query already excluded
        # the labelled and skipped ones.
        assignment, _ = Assignment.objects.update_or_create(
            comparison=comparison,
            annotator=annotator,
            defaults={
                "project": project,
                "state": Assignment.State.LEASED,
                "swapped": swapped,
                "leased_at": now,
                "expires_at": expires_at,
                "finished_at": None,
            },
        )
        return assignment


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


def _lock_own_assignment(
    assignment_id: int, annotator: AbstractBaseUser
) -> tuple[Comparison, Assignment]:
    """Lock comparison then assignment (the global lock order). Someone else's
    assignment is reported as not found, so ids cannot be probed."""
    comparison_id = (
        Assignment.objects.filter(pk=assignment_id, annotator=annotator)
        .values_list("comparison_id", flat=True)
        .first()
    )
    if comparison_id is None:
        raise NotFound("Assignment not found.")
    comparison = Comparison.objects.select_for_update().get(pk=comparison_id)
    assignment = Assignment.objects.select_for_update().get(pk=assignment_id)
    return comparison, assignment


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
    with transaction.atomic():
        # Race closed: the same label arriving twice at once (double click, client
        # retry). Both wait on the comparison lock; the second then sees the
        # assignment labelled and returns the first one's label.
        comparison, assignment = _lock_own_assignment(assignment_id, annotator)
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
            # with more than k labels.
            others = _active_leases(
                comparison.pk, now, exclude_annotator_id=annotator.pk
            )
            if (
                comparison.status != Comparison.Status.OPEN
                or comparison.labels_count + others >= comparison.labels_required
            ):
                assignment.state = Assignment.State.EXPIRED
                assignment.finished_at = assignment.finished_at or now
                assignment.save(update_fields=["state", "finished_at"])
                raise Conflict(
                    "Your lease on this comparison expired and its slot was taken by "
                    "another annotator; the label was not saved. Fetch the next one."
                )
        elif comparison.status != Comparison.Status.OPEN:
            # Only possible if an admin retired or completed it by hand.
            raise Conflict("This comparison is no longer open for labels.")

        try:
            # Savepoint: the unique (comparison, annotator) constraint is the last
            # line of defence; if it fires, nothing of this write survives.
            with transaction.atomic():
                label = Label.objects.create(
                    comparison=comparison,
                    annotator=annotator,
                    assignment=assignment,
                    choice=stored,
                    strength=strength,
                    p_a=_P_A[Choice(stored)],
                    rationale=rationale,
                    duration_ms=duration_ms,
                    shown_swapped=assignment.swapped,
                    idempotency_key=idempotency_key,
                )
        except IntegrityError as exc:
            raise Conflict("You already labelled this comparison.") from exc

        assignment.state = Assignment.State.LABELLED
        assignment.finished_at = now
        assignment.save(update_fields=["state", "finished_at"])

        # The row is locked and was read after locking, so the in-memory count is
        # current; one UPDATE writes the count, the status and the aggregates.
        comparison.labels_count += 1
        changed = ["labels_count"]
        if comparison.labels_count >= comparison.labels_required:
            # The k-th label completes the comparison in the same transaction, so it
            # can never be leased again after the label is visible.
            comparison.status = Comparison.Status.COMPLETE
            comparison.completed_at = now
            changed += ["status", "completed_at"]
        comparison_aggregate_refresh(comparison, also_save=changed)
        return label, True


def assignment_skip(
    *, assignment_id: int, annotator: AbstractBaseUser, now: datetime | None = None
) -> Assignment:
    """Give the comparison back; it is never served to this annotator again.
    Skipping twice is a no-op; skipping a labelled assignment is a Conflict."""
    now = _now(now)
    with transaction.atomic():
        _, assignment = _lock_own_assignment(assignment_id, annotator)
        if assignment.state == Assignment.State.SKIPPED:
            return assignment
        if assignment.state == Assignment.State.LABELLED:
            raise Conflict("This assignment is already labelled.")
        assignment.state = Assignment.State.SKIPPED
        assignment.finished_at = now
        assignment.save(update_fields=["state", "finished_at"])
        return assignment
