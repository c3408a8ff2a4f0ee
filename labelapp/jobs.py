"""Background jobs: one Job row per job, claimed atomically, with heartbeats.

Lifecycle: ``job_enqueue`` (pending; the Celery task is sent on commit) → the task
calls ``job_run`` which claims the row with a conditional UPDATE (pending → running),
runs the service with a progress reporter and a heartbeat thread, and marks it
succeeded or failed. ``jobs_reap_stale`` (periodic) requeues or fails jobs whose
worker stopped heartbeating (killed, OOM, machine gone).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from labelapp.errors import Conflict
from labelapp.models import Job, Project

log = logging.getLogger(__name__)

# Seconds without a heartbeat after which a running job's worker counts as dead.
STALE_AFTER = getattr(settings, "PAIRLOOP_JOB_STALE_SECONDS", 120)
HEARTBEAT_EVERY = getattr(settings, "PAIRLOOP_JOB_HEARTBEAT_SECONDS", 5)
MAX_ATTEMPTS = getattr(settings, "PAIRLOOP_JOB_MAX_ATTEMPTS", 3)
PROGRESS_EVERY = 1.0  # seconds between progress writes (heartbeats fill the gaps)

# kind → Celery task name; tasks.py registers the tasks under these names.
TASKS = {
    Job.Kind.TRAIN_RM: "pairloop.gpu.train_reward_model",
    Job.Kind.ROUND: "pairloop.gpu.run_round",
    Job.Kind.EXPORT: "pairloop.export",
    Job.Kind.IMPORT: "pairloop.import",
}


def _send(job: Job) -> None:
    from config.celery import app

    app.send_task(TASKS[job.kind], args=[job.pk])


def job_enqueue(
    *,
    project: Project | None,
    kind: str,
    params: dict | None = None,
    created_by=None,
    if_active: str = "return",
) -> tuple[Job, bool]:
    """Create a pending job and send its task once the transaction commits.

    At most one job per (project, kind) is active (a partial unique index). When one
    is, ``if_active="return"`` returns it (created=False) — so many labels arriving at
    once start training once — and ``if_active="raise"`` raises Conflict.
    """
    try:
        with transaction.atomic():
            job = Job.objects.create(
                project=project, kind=kind, params=params or {}, created_by=created_by
            )
    except IntegrityError:
        active = Job.objects.filter(
            project=project, kind=kind, status__in=Job.ACTIVE
        ).first()
        if active is None:  # finished between our insert and this read: try again
            return job_enqueue(
                project=project,
                kind=kind,
                params=params,
                created_by=created_by,
                if_active=if_active,
            )
        if if_active == "raise":
            raise Conflict(
                f"a {kind} job (#{active.pk}) is already {active.status} for this "
                "project"
            ) from None
        return active, False
    transaction.on_commit(lambda: _send(job))
    return job, True


def job_claim(*, job_id: int, worker: str, now: datetime | None = None) -> Job | None:
    """Atomically take a job: pending, or running on a worker that stopped beating.

    Returns None when the job is done, cancelled, or held by a live worker — a
    duplicate delivery of the same task then does nothing.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=STALE_AFTER)
    # One conditional UPDATE closes the race between two deliveries of the same
    # task (acks_late redelivery, reaper requeue): only one of them matches.
    claimed = Job.objects.filter(
        Q(status=Job.Status.PENDING)
        | Q(status=Job.Status.RUNNING, heartbeat_at__lt=stale),
        pk=job_id,
    ).update(
        status=Job.Status.RUNNING,
        worker=worker,
        heartbeat_at=now,
        started_at=now,
        attempts=F("attempts") + 1,
        error="",
        traceback_tail="",
    )
    if not claimed:
        return None
    return Job.objects.get(pk=job_id)


@dataclass
class Reporter:
    """Progress callback handed to services: ``reporter(fraction, message)``."""

    job_id: int
    worker: str
    _last: float = 0.0

    def __call__(self, fraction: float, message: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        fraction = min(1.0, max(0.0, float(fraction)))
        # Guarded by worker: a job requeued to another worker ignores us.
        Job.objects.filter(
            pk=self.job_id, status=Job.Status.RUNNING, worker=self.worker
        ).update(progress=fraction, message=message[:500], heartbeat_at=timezone.now())


class _Heartbeat(threading.Thread):
    """Touches heartbeat_at while a long step (a training epoch) reports nothing."""

    def __init__(self, job_id: int, worker: str) -> None:
        super().__init__(daemon=True, name=f"job-{job_id}-heartbeat")
        self.job_id, self.worker = job_id, worker
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(HEARTBEAT_EVERY):
                Job.objects.filter(
                    pk=self.job_id, status=Job.Status.RUNNING, worker=self.worker
                ).update(heartbeat_at=timezone.now())
        except Exception:  # the job itself reports DB trouble; never crash here
            log.exception("heartbeat for job %s failed", self.job_id)
        finally:
            connection.close()


def job_run(
    *, job_id: int, worker: str, service: Callable[[Job, Reporter], dict | None]
) -> Job | None:
    """Claim ``job_id`` and run ``service(job, reporter)``; record the outcome."""
    # (Celery's Django fix-up closes stale DB connections around each task.)
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        log.info("job %s is done or held by a live worker; nothing to do", job_id)
        return None
    heartbeat = _Heartbeat(job_id, worker)
    heartbeat.start()
    reporter = Reporter(job_id, worker)
    try:
        result = service(job, reporter) or {}
    except Exception as exc:
        tail = traceback.format_exc()[-4000:]
        Job.objects.filter(pk=job_id, worker=worker).update(
            status=Job.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            traceback_tail=tail,
            finished_at=timezone.now(),
        )
        log.exception("job %s failed", job_id)
        raise
    finally:
        heartbeat.stop.set()
        heartbeat.join(5)
    Job.objects.filter(pk=job_id, worker=worker).update(
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result=result,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    return Job.objects.get(pk=job_id)


def job_retry(*, job: Job) -> Job:
    """Put a failed job back in the queue (admin action)."""
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.FAILED).update(
        status=Job.Status.PENDING, progress=0.0, message="retry requested", error=""
    )
    if not updated:
        raise Conflict(f"job #{job.pk} is {job.status}; only failed jobs are retried")
    job.refresh_from_db()
    transaction.on_commit(lambda: _send(job))
    return job


def jobs_reap_stale(*, now: datetime | None = None) -> dict[str, int]:
    """Requeue (or fail, after MAX_ATTEMPTS) running jobs whose worker died."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=STALE_AFTER)
    requeued = failed = 0
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=stale):
        with transaction.atomic():
            if job.attempts >= MAX_ATTEMPTS:
                n = Job.objects.filter(
                    pk=job.pk, status=Job.Status.RUNNING, heartbeat_at__lt=stale
                ).update(
                    status=Job.Status.FAILED,
                    error=(
                        f"worker {job.worker or '?'} stopped responding (no heartbeat "
                        f"since {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC) after "
                        f"{job.attempts} attempts; retry it from the jobs page"
                    ),
                    finished_at=now,
                )
                failed += n
            else:
                # The same conditional UPDATE as claiming: a worker that woke up
                # and heartbeat in between keeps its job.
                n = Job.objects.filter(
                    pk=job.pk, status=Job.Status.RUNNING, heartbeat_at__lt=stale
                ).update(
                    status=Job.Status.PENDING,
                    message=f"requeued: worker {job.worker or '?'} stopped responding",
                )
                if n:
                    requeued += 1
                    transaction.on_commit(lambda job=job: _send(job))
    return {"requeued": requeued, "failed": failed}
