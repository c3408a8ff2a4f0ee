"""Lease expiry in bulk (beat runs it; the queue also closes lapsed leases itself)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from labelapp.models import Assignment
from labelapp.queue.assignments import _now


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
