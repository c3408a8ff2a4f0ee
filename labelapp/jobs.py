"""Background jobs: one Job row per job, claimed atomically, with heartbeats.

Lifecycle: ``job_enqueue`` (pending; the Celery task is sent on commit) → the task
calls ``job_run`` which claims the row with a conditional UPDATE (pending → running),
runs the service with a progress reporter and a heartbeat thread, and marks it
succeeded or failed. ``jobs_reap_stale`` (periodic) requeues or fails jobs whose
worker stopped heartbeating (killed, OOM, machine gone) and re-sends pending jobs
whose message never reached a worker (the broker was down when they were created).

The claim is the job's fencing token: the worker id (unique per execution) and the
attempt number it set. Every write of a job — progress, heartbeat, the service's
results (``job_fence``), the final status — names both, so an execution that lost its
claim (requeued after a long outage and taken by another worker) writes nothing.

A dropped database connection (a failover, ``pg_terminate_backend``, a restarted
pgbouncer) is not a lost worker: the heartbeat reconnects on its next beat, progress
reports are skipped, and the service is retried in place on the same claim with
backoff (``retry_db``), so a blip costs seconds, not an attempt.

Settings are read at call time (tests override them with ``override_settings``).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F, Q
from django.utils import timezone

from labelapp.broker import publisher
from labelapp.errors import Conflict, ValidationFailed
from labelapp.models import Job, Project
from labelapp.tasknames import TASK_FOR_KIND

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0  # seconds between progress writes (heartbeats fill the gaps)
# Seconds to wait before each in-place retry after a database error: about 30 s in
# all, well under the default stale time (120 s), so a blip never costs an attempt.
DB_RETRY_BACKOFF: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)

T = TypeVar("T")


def stale_after() -> float:
    """Seconds without a heartbeat after which a running job's worker counts as
    dead (PAIRLOOP_JOB_STALE_SECONDS)."""
    return float(settings.PAIRLOOP_JOB_STALE_SECONDS)


def heartbeat_every() -> float:
    return float(settings.PAIRLOOP_JOB_HEARTBEAT_SECONDS)


def max_attempts() -> int:
    return int(settings.PAIRLOOP_JOB_MAX_ATTEMPTS)


class Superseded(Exception):
    """This execution no longer holds the job's claim: it was requeued (its worker
    looked dead) and may run elsewhere. Its results must not be written."""


def _send(job: Job) -> None:
    publisher.send(TASK_FOR_KIND[job.kind], args=[job.pk])


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
    if kind not in TASK_FOR_KIND:
        raise ValidationFailed(
            f"jobs of kind {str(kind)!r} do not run in the background; kinds with a "
            "task: " + ", ".join(sorted(TASK_FOR_KIND))
        )
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
    stale = now - timedelta(seconds=stale_after())
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


def _held(job: Job):
    """This execution's claim: the fencing token in a filter."""
    return Job.objects.filter(
        pk=job.pk, status=Job.Status.RUNNING, worker=job.worker, attempts=job.attempts
    )


def job_fence(job: Job) -> None:
    """Call first inside the transaction that writes a job's results: locks the job
    row and raises Superseded unless this execution still holds the claim.

    The lock orders the write against the reaper's requeue (an UPDATE of the same
    row): either the results commit first — and the next attempt finds them and does
    nothing — or the requeue does, and this check refuses the write.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("job_fence() must run inside the transaction it guards")
    if not list(_held(job).select_for_update().values_list("pk", flat=True)):
        raise Superseded(
            f"job #{job.pk} attempt {job.attempts} on {job.worker} lost its claim"
        )


def retry_db(
    fn: Callable[[], T],
    *,
    what: str,
    backoff: Sequence[float] = DB_RETRY_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; after a dropped connection or another transient database error,
    reconnect and run it again, waiting ``backoff[i]`` seconds before retry i.

    ``fn`` must be safe to repeat (its own transaction, idempotent). Inside an outer
    transaction nothing can be retried (the transaction is gone): the error is raised.
    """
    for delay in (*backoff, None):
        try:
            return fn()
        except TRANSIENT_DB_ERRORS as exc:
            if delay is None or connection.in_atomic_block:
                raise
            log.warning("%s: database error (%s); retrying in %.1f s", what, exc, delay)
            connection.close()  # the next query opens a fresh connection
            sleep(delay)
    raise AssertionError("unreachable")


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
        try:
            # Guarded by worker: a job requeued to another worker ignores us.
            Job.objects.filter(
                pk=self.job_id, status=Job.Status.RUNNING, worker=self.worker
            ).update(
                progress=fraction, message=message[:500], heartbeat_at=timezone.now()
            )
        except TRANSIENT_DB_ERRORS as exc:
            if connection.in_atomic_block:
                raise
            # Progress is best effort: a training step must not die because the
            # database blinked. The next report (or the service's write) reconnects.
            log.warning("job %s: progress not saved (%s)", self.job_id, exc)
            connection.close()


class _Heartbeat(threading.Thread):
    """Touches heartbeat_at while a long step (a training epoch) reports nothing.

    Each beat has its own ``try``: a dropped connection costs one beat, then the
    thread reconnects (its connection is its own: Django's are per thread)."""

    def __init__(self, job_id: int, worker: str) -> None:
        super().__init__(daemon=True, name=f"job-{job_id}-heartbeat")
        self.job_id, self.worker = job_id, worker
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(heartbeat_every()):
                try:
                    Job.objects.filter(
                        pk=self.job_id, status=Job.Status.RUNNING, worker=self.worker
                    ).update(heartbeat_at=timezone.now())
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("heartbeat for job %s: %s", self.job_id, exc)
                    connection.close()  # reconnect on the next beat
                except Exception:  # never let the thread die while the job runs
                    log.exception("heartbeat for job %s failed", self.job_id)
        finally:
            connection.close()


def _run_service(
    job: Job, reporter: Reporter, service: Callable[[Job, Reporter], dict | None]
) -> dict:
    """The service, retried in place on the same claim after transient database
    errors (services are idempotent: they find what an earlier try registered)."""

    def attempt() -> dict:
        if not _held(job).exists():  # the retry of a long outage may come too late
            raise Superseded(f"job #{job.pk} was requeued while the database was away")
        return service(job, reporter) or {}

    return retry_db(attempt, what=f"job {job.pk}")


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
        result = _run_service(job, reporter, service)
    except Superseded as exc:
        log.warning("%s; its results were not written", exc)
        return None
    except Exception as exc:
        tail = traceback.format_exc()[-4000:]
        error = f"{type(exc).__name__}: {exc}"[:2000]
        retry_db(
            lambda: _held(job).update(
                status=Job.Status.FAILED,
                error=error,
                traceback_tail=tail,
                finished_at=timezone.now(),
            ),
            what=f"job {job_id} failure record",
        )
        log.exception("job %s failed", job_id)
        raise
    finally:
        heartbeat.stop.set()
        heartbeat.join(5)
    retry_db(
        lambda: _held(job).update(
            status=Job.Status.SUCCEEDED,
            progress=1.0,
            result=result,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
        ),
        what=f"job {job_id} success record",
    )
    return Job.objects.get(pk=job_id)


def job_retry(*, job: Job) -> Job:
    """Put a failed job back in the queue (admin action) with a fresh budget of
    attempts: the admin has looked at why it failed, so one more worker loss must
    not fail it again at once."""
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.FAILED).update(
        status=Job.Status.PENDING,
        progress=0.0,
        attempts=0,
        heartbeat_at=timezone.now(),  # sent now: the reaper re-sends after stale
        message=f"retry requested: a fresh budget of {max_attempts()} attempts",
        error="",
    )
    if not updated:
        raise Conflict(f"job #{job.pk} is {job.status}; only failed jobs are retried")
    job.refresh_from_db()
    transaction.on_commit(lambda: _send(job))
    return job


def jobs_reap_stale(*, now: datetime | None = None) -> dict[str, int]:
    """Requeue (or fail, after PAIRLOOP_JOB_MAX_ATTEMPTS) running jobs whose worker
    died; re-send pending jobs that no worker claimed within the stale time."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=stale_after())
    limit = max_attempts()
    requeued = failed = resent = 0
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=stale):
        with transaction.atomic():
            # Each UPDATE repeats the claim's condition: a worker that still beats
            # (or woke up and beat in between) keeps its job. The heartbeat thread
            # outlives database blips, so only a dead worker stops beating.
            still_stale = Job.objects.filter(
                pk=job.pk, status=Job.Status.RUNNING, heartbeat_at__lt=stale
            )
            if job.attempts >= limit:
                failed += still_stale.update(
                    status=Job.Status.FAILED,
                    error=(
                        f"worker {job.worker or '?'} stopped responding (no heartbeat "
                        f"since {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC) after "
                        f"{job.attempts} attempts; retry it from the jobs page"
                    ),
                    finished_at=now,
                )
            elif still_stale.update(
                status=Job.Status.PENDING,
                heartbeat_at=now,  # when it was sent again, for the re-send below
                message=f"requeued: worker {job.worker or '?'} stopped responding",
            ):
                requeued += 1
                transaction.on_commit(lambda job=job: _send(job))
    # A pending job is a row first and a message second: when the broker was down
    # at commit, the message is lost and the row is the outbox. Re-sending at most
    # once per stale time is harmless (a duplicate delivery claims nothing).
    unsent = Q(heartbeat_at__lt=stale) | Q(
        heartbeat_at__isnull=True, created_at__lt=stale
    )
    for job in Job.objects.filter(unsent, status=Job.Status.PENDING):
        with transaction.atomic():
            if Job.objects.filter(unsent, pk=job.pk, status=Job.Status.PENDING).update(
                heartbeat_at=now
            ):
                resent += 1
                transaction.on_commit(lambda job=job: _send(job))
    return {"requeued": requeued, "failed": failed, "resent": resent}
