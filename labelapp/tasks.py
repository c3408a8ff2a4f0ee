"""Celery tasks: thin wrappers that call services (see ARCHITECTURE.md)."""

from __future__ import annotations

from celery import shared_task

from labelapp.queue import leases_reclaim


@shared_task(name="pairloop.leases.reclaim", acks_late=True)
def reclaim_expired_leases() -> int:
    """Periodic (beat). Idempotent: a second run finds nothing left to reclaim."""
    return leases_reclaim()
