"""The ranking queue: lease a ranking item to an annotator, consume the lease when
they rank it, release it when they skip.

The pairwise queue's guarantees (labelapp/queue/__init__.py), for ranking items:

* an item is never leased to more annotators at once than the rankings it still
  needs: ``labels_count + live leases <= labels_required`` (exact overlap k),
  re-checked *after* the item row is locked;
* an annotator never gets an item they ranked or skipped;
* one annotator asking twice (double click, two tabs) gets the same lease back:
  their ``next`` calls are serialised on their Membership row;
* a lease lapses at ``expires_at`` (the project's ``lease_seconds``) and its slot
  is free again at once (every count reads ``expires_at > now``); ``leases_reclaim``
  marks lapsed rows expired in bulk, for the record only.

Lock order, everywhere: Membership -> RankingItem -> RankingAssignment -> the
implied Comparisons (ranking_submit, ranking_review), so these paths cannot
deadlock with each other or with the pairwise queue (which takes Membership ->
Comparison). ``next`` takes item locks only with SKIP LOCKED, so annotators never
queue behind each other's candidate items. The price, as in the pairwise queue:
an annotator asking while the only item with a free slot is being leased to
someone else is told that nothing is left *now*; asking again serves it.

Ranking items are few next to comparisons and an annotator spends a minute on
one, so this is ORM code, not the pairwise queue's hand-written SQL; each query
that must see what another transaction committed while we waited for a lock is its
own statement after the locking one (READ COMMITTED: a statement reads one
snapshot). Clock (``now``) and randomness (``rng``) are injected for tests.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.models import Membership, Ranking, RankingAssignment, RankingItem
from labelapp.queue.skip import skip_reason_problem

# How many locked-but-full candidates ``next`` steps over before giving up on a
# pass (the pairwise queue's _MAX_CANDIDATE_TRIES).
_MAX_CANDIDATE_TRIES = 20

LEASED = RankingAssignment.State.LEASED


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def live_leases(*, now: datetime) -> Q:
    """The leases that hold a slot at ``now``."""
    return Q(state=LEASED, expires_at__gt=now)


def _live_lease_count(item_ref: OuterRef, now: datetime) -> Coalesce:
    counted = (
        RankingAssignment.objects.filter(live_leases(now=now), item_id=item_ref)
        .order_by()
        .values("item_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def ranking_item_lease_for(
    *,
    annotator: AbstractBaseUser,
    project_id: int,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> RankingAssignment | None:
    """Lease the next ranking item of the project to ``annotator`` (or give back
    the one they hold); None when nothing is left for them or their membership is
    paused. NotFound for non-members (staff who are not members included: they get
    no queue) and unknown projects. The assignment's ``item`` is loaded, with its
    prompt.

    Order: gold first when the project's gold rate draws it (then the other kind,
    so nothing that needs rankings is withheld by the draw), then items with the
    most rankings (started items complete before new ones are begun), then id."""
    now = _now(now)
    rng = rng or random.Random()
    gold_draw = rng.random()
    with transaction.atomic():
        # 1. The membership row, locked, with the project's settings.
        # Race closed: the same annotator asking twice at once. Their calls are
        # serialised here, so the second sees the first's lease (below, on fresh
        # snapshots) and returns it instead of taking a second one.
        member = (
            Membership.objects.select_for_update(of=("self",))
            .filter(project_id=project_id, user_id=annotator.pk)
            .values("paused", "project__lease_seconds", "project__gold_rate")
            .first()
        )
        if member is None:
            raise NotFound("Project not found.")
        if member["paused"]:
            return None
        mine = RankingAssignment.objects.filter(
            annotator_id=annotator.pk, project_id=project_id
        )
        # 2. Their own lapsed leases are theirs to close.
        mine.filter(state=LEASED, expires_at__lte=now).update(
            state=RankingAssignment.State.EXPIRED, finished_at=now
        )
        # 3. A live lease they hold comes back (a reload shows the same item).
        held = (
            mine.filter(live_leases(now=now))
            .select_related("item__prompt")
            .order_by("leased_at", "id")
            .first()
        )
        if held is not None:
            return held
        rate = member["project__gold_rate"]
        want_gold = rate > 0 and gold_draw < rate
        expires = now + timedelta(seconds=member["project__lease_seconds"])
        for gold in (want_gold, not want_gold):
            tried: list[int] = []
            for _ in range(_MAX_CANDIDATE_TRIES):
                candidate = _candidate(annotator, project_id, gold, tried, now)
                if candidate is None:
                    break
                lease = _lease(candidate, annotator, project_id, now, expires)
                if lease is not None:
                    return lease
                tried.append(candidate)
    return None


def _candidate(
    annotator: AbstractBaseUser,
    project_id: int,
    gold: bool,
    tried: list[int],
    now: datetime,
) -> int | None:
    """The first item in queue order that seems to have a free slot, its row
    locked (SKIP LOCKED: an item another annotator is leasing right now is passed
    over, not waited for). The free-slot test reads this statement's snapshot,
    taken before the lock; it is a pre-filter only, re-checked in ``_lease``."""
    done_by_me = RankingAssignment.objects.filter(
        item_id=OuterRef("pk"),
        annotator_id=annotator.pk,
        state__in=[RankingAssignment.State.RANKED, RankingAssignment.State.SKIPPED],
    )
    ranked_by_me = Ranking.objects.filter(
        item_id=OuterRef("pk"), annotator_id=annotator.pk
    )
    return (
        RankingItem.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(project_id=project_id, status=RankingItem.Status.OPEN, is_gold=gold)
        .exclude(pk__in=tried)
        .exclude(Exists(done_by_me))
        .exclude(Exists(ranked_by_me))
        .alias(live=_live_lease_count(OuterRef("pk"), now))
        .filter(labels_count__lt=F("labels_required") - F("live"))
        .order_by("-labels_count", "id")
        .values_list("pk", flat=True)
        .first()
    )


def _lease(
    item_id: int,
    annotator: AbstractBaseUser,
    project_id: int,
    now: datetime,
    expires: datetime,
) -> RankingAssignment | None:
    """With ``item_id``'s row locked: re-check the free slot, take the lease.
    None when the slot is gone (the caller steps on).

    Race closed (free slot): two annotators' candidate queries run on the same
    snapshot and both see one free slot; the first leases and commits; the second
    then locks the row. PostgreSQL re-checks only the item row's own columns after
    a lock wait (a new lease does not touch that row), so the count is read again
    here, in new statements, which see every lease committed before the lock."""
    item = RankingItem.objects.select_related("prompt").get(pk=item_id)
    others = RankingAssignment.objects.filter(item_id=item_id).exclude(
        annotator_id=annotator.pk
    )
    taken = others.filter(live_leases(now=now)).count()
    if item.status != RankingItem.Status.OPEN or (
        item.labels_count + taken >= item.labels_required
    ):
        return None
    # Others' lapsed leases on this item: closed here, for the record.
    others.filter(state=LEASED, expires_at__lte=now).update(
        state=RankingAssignment.State.EXPIRED, finished_at=now
    )
    # Re-leasing: (item, annotator) is unique, so an expired earlier lease of this
    # annotator is re-used. Race closed: the candidate query excluded items they
    # ranked or skipped, but on its snapshot; only a row still expired (read now,
    # under the item lock every ranking and skip of this item takes) is turned
    # back into a lease.
    existing = RankingAssignment.objects.filter(
        item_id=item_id, annotator_id=annotator.pk
    ).first()
    if existing is not None:
        if existing.state != RankingAssignment.State.EXPIRED:
            return None
        if Ranking.objects.filter(item_id=item_id, annotator_id=annotator.pk).exists():
            return None
        existing.state = LEASED
        existing.leased_at, existing.expires_at, existing.finished_at = (
            now,
            expires,
            None,
        )
        existing.save(update_fields=["state", "leased_at", "expires_at", "finished_at"])
        lease = existing
    else:
        lease = RankingAssignment.objects.create(
            item_id=item_id,
            annotator_id=annotator.pk,
            project_id=project_id,
            state=LEASED,
            leased_at=now,
            expires_at=expires,
        )
    lease.item = item
    return lease


def ranking_slot_check(
    *, item: RankingItem, annotator: AbstractBaseUser, now: datetime | None = None
) -> None:
    """For a *new* ranking of ``item`` (locked by the caller) by ``annotator``:
    Conflict when the item has no slot for them. Called by ``ranking_rank`` inside
    its transaction, after the item lock; the ranking's write then consumes the
    lease (``ranking_lease_consume``).

    A live lease of theirs is their slot. Without one (it lapsed, or they rank an
    item by id without asking ``next``), they may still take a slot nobody else
    holds: ``labels_count + others' live leases < labels_required``. So a late
    ranking on a lapsed lease is kept when the slot is still free, and refused
    when someone else was leased it meanwhile: the overlap stays exactly k."""
    now = _now(now)
    leases = RankingAssignment.objects.filter(live_leases(now=now), item_id=item.pk)
    if leases.filter(annotator_id=annotator.pk).exists():
        return
    taken = leases.exclude(annotator_id=annotator.pk).count()
    if item.labels_count + taken >= item.labels_required:
        raise Conflict(
            f"Ranking item {item.pk} already has the {item.labels_required} "
            "ranking(s) it needs (or they are leased to others); ask for the "
            "next one."
        )


def ranking_lease_consume(
    *, item_id: int, annotator_id: int, now: datetime | None = None
) -> None:
    """A ranking of the item by the annotator was stored: their lease on it (if
    any, live, lapsed or skipped) is done. Called by ``ranking_submit`` under the
    item lock, so ``next`` (which locks the item before it leases) cannot lease
    the item to them again in between."""
    now = _now(now)
    RankingAssignment.objects.filter(
        item_id=item_id, annotator_id=annotator_id
    ).exclude(state=RankingAssignment.State.RANKED).update(
        state=RankingAssignment.State.RANKED, finished_at=now
    )


def ranking_item_skip(
    *,
    item_id: int,
    annotator: AbstractBaseUser,
    reason: str = "",
    now: datetime | None = None,
) -> RankingAssignment:
    """Give the item back (its slot is free at once); it is never served to this
    annotator again. ``reason`` (optional, at most 200 characters) is kept for the
    project's admins. Skipping twice is a no-op; skipping an item one has ranked
    is a Conflict; NotFound when there is no such item. The caller checked that
    the annotator may rank in the item's project."""
    if problem := skip_reason_problem(reason):
        raise ValidationFailed(problem)
    reason = reason.strip()
    now = _now(now)
    with transaction.atomic():
        # The item lock every ranking of the item takes: a skip and a ranking of
        # the same item by the same annotator cannot both succeed.
        item = RankingItem.objects.select_for_update().filter(pk=item_id).first()
        if item is None:
            raise NotFound("Ranking item not found.")
        if Ranking.objects.filter(item=item, annotator_id=annotator.pk).exists():
            raise Conflict("You have ranked this item; it cannot be skipped.")
        lease, created = RankingAssignment.objects.get_or_create(
            item=item,
            annotator_id=annotator.pk,
            defaults={
                "project_id": item.project_id,
                "state": RankingAssignment.State.SKIPPED,
                "leased_at": now,
                "expires_at": now,
                "finished_at": now,
                "skip_reason": reason,
            },
        )
        if not created and lease.state != RankingAssignment.State.SKIPPED:
            lease.state = RankingAssignment.State.SKIPPED
            lease.finished_at = now
            lease.skip_reason = reason
            lease.save(update_fields=["state", "finished_at", "skip_reason"])
    return lease
