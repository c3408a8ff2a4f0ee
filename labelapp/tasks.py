"""Celery tasks: thin wrappers that take ids, claim the job row and call a service.

Every task is named from the one registry (labelapp.tasknames), acks late and is
rejected (so redelivered) when its worker is lost; retries with backoff are for
transient infrastructure errors only (database or broker connections), never for
bad data or bugs. Inside a job, database blips are retried in place on the same
claim (labelapp.jobs.retry_db); a Celery retry is the last resort.
"""

from __future__ import annotations

import os
import socket
import uuid

from celery import shared_task
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from labelapp import jobs, tasknames
from labelapp.datasets.export_jobs import export_job
from labelapp.loop.policy import policy_train
from labelapp.loop.reward import reward_model_train
from labelapp.loop.rounds import round_run
from labelapp.loop.selection import comparisons_score
from labelapp.loop.strategy_gain import strategy_gain_run
from labelapp.loop.triggers import training_maybe_trigger
from labelapp.queue import leases_reclaim
from labelapp.services.uploads import upload_import_job

TRANSIENT = (OperationalError, InterfaceError, RedisConnectionError)
COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 5,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 5,
}
GPU_LIMITS = {"soft_time_limit": 3 * 3600, "time_limit": 3 * 3600 + 300}
DEFAULT_LIMITS = {"soft_time_limit": 1800, "time_limit": 1900}


def _worker_id() -> str:
    # Unique per run: a requeued job picked up by the same process is a new owner.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@shared_task(name=tasknames.TRAIN_REWARD_MODEL, **COMMON, **GPU_LIMITS)
def train_reward_model(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=reward_model_train)


@shared_task(name=tasknames.RUN_ROUND, **COMMON, **GPU_LIMITS)
def run_round(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=round_run)


@shared_task(name=tasknames.TRAIN_POLICY, **COMMON, **GPU_LIMITS)
def train_policy(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=policy_train)


@shared_task(name=tasknames.SCORE_COMPARISONS, **COMMON, **GPU_LIMITS)
def score_comparisons(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=comparisons_score)


@shared_task(name=tasknames.STRATEGY_GAIN, **COMMON, **GPU_LIMITS)
def strategy_gain(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=strategy_gain_run)


@shared_task(name=tasknames.EXPORT, **COMMON, **DEFAULT_LIMITS)
def export(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=export_job)


@shared_task(name=tasknames.IMPORT_UPLOAD, **COMMON, **DEFAULT_LIMITS)
def import_upload(job_id: int) -> None:
    jobs.job_run(job_id=job_id, worker=_worker_id(), service=upload_import_job)


@shared_task(name=tasknames.REAP_STALE_JOBS, **COMMON, **DEFAULT_LIMITS)
def reap_stale_jobs() -> dict[str, int]:
    return jobs.jobs_reap_stale()


@shared_task(name=tasknames.CHECK_TRIGGERS, **COMMON, **DEFAULT_LIMITS)
def check_triggers(project_id: int | None = None) -> int:
    return training_maybe_trigger(project_id=project_id)


@shared_task(name=tasknames.RECLAIM_LEASES, **COMMON, **DEFAULT_LIMITS)
def reclaim_expired_leases() -> int:
    return leases_reclaim()
