"""Lease expiry in bulk (beat runs it; the queue also closes lapsed leases itself)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from labelapp.models import Assignment, RankingAssignment
from labelapp.queue.assignments import _now


def leases_reclaim(*, now: datetime | None = None, batch: int = 5000) -> int:
    """Mark expired leases (of comparisons and of ranking items) as expired;
    returns how many. Safe to run concurrently with itself and with the queues:
    rows being changed by someone else are skipped (they are picked up on the next
    run), so two reclaimers never wait on each other. Only the record changes: a
    lapsed lease holds no slot in either queue whether it is marked or not."""
    now = _now(now)
    return _reclaim(Assignment, now, batch) + _reclaim(RankingAssignment, now, batch)


def _reclaim(model: type[Assignment | RankingAssignment], now, batch: int) -> int:
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                model.objects.select_for_update(skip_locked=True)
                .filter(state="leased", expires_at__lte=now)
                .values_list("id", flat=True)[:batch]
            )
            if not ids:
                return total
            # Re-check the state: a row we locked may have been labelled just before.
            total += model.objects.filter(
                id__in=ids, state="leased", expires_at__lte=now
            ).update(state="expired", finished_at=now)
        if len(ids) < batch:
            return total
