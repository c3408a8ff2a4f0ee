"""Job rows: atomic claim, duplicate delivery, progress, heartbeats, stale reaping."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import Conflict
from labelapp.models import Job, Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return Project.objects.create(name="jobs")


def test_enqueue_once_per_project_and_kind(project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first, created = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM)
        again, created_again = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM)
    assert created and not created_again and again == first
    assert len(callbacks) == 1  # one task message, not two
    with pytest.raises(Conflict, match="already pending"):
        jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM, if_active="raise")


def test_claim_is_exclusive_and_duplicate_delivery_does_nothing(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    calls = []
    finished = jobs.job_run(
        job_id=job.pk, worker="w1", service=lambda j, r: calls.append(j.pk) or {"n": 1}
    )
    assert finished.status == Job.Status.SUCCEEDED and finished.result == {"n": 1}
    assert finished.progress == 1.0 and finished.attempts == 1
    # The same task delivered again finds the job done and does nothing.
    assert (
        jobs.job_run(job_id=job.pk, worker="w2", service=lambda j, r: calls.append(2))
        is None
    )
    assert calls == [job.pk]


def test_live_worker_keeps_its_job(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    assert jobs.job_claim(job_id=job.pk, worker="w1") is not None
    assert jobs.job_claim(job_id=job.pk, worker="w2") is None
    later = timezone.now() + timedelta(seconds=jobs.STALE_AFTER + 1)
    taken = jobs.job_claim(job_id=job.pk, worker="w2", now=later)
    assert taken.worker == "w2" and taken.attempts == 2


def test_failure_records_error_and_traceback(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)

    def boom(job, report):
        report(0.5, "half way", force=True)
        raise RuntimeError("sampler exploded")

    with pytest.raises(RuntimeError):
        jobs.job_run(job_id=job.pk, worker="w", service=boom)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "RuntimeError: sampler exploded"
    assert "boom" in job.traceback_tail and job.progress == 0.5
    retried = jobs.job_retry(job=job)
    assert retried.status == Job.Status.PENDING


def test_reporter_is_throttled_and_guarded_by_worker(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    jobs.job_claim(job_id=job.pk, worker="w1")
    report = jobs.Reporter(job.pk, "w1")
    report(0.25, "scored 1,000 / 4,000 samples")
    report(0.30, "too soon, dropped")
    job.refresh_from_db()
    assert (job.progress, job.message) == (0.25, "scored 1,000 / 4,000 samples")
    jobs.Reporter(job.pk, "someone-else")(0.9, "not mine", force=True)
    job.refresh_from_db()
    assert job.progress == 0.25


@pytest.mark.django_db(transaction=True)
def test_heartbeat_thread_beats_during_a_silent_step(project, settings, monkeypatch):
    monkeypatch.setattr(jobs, "HEARTBEAT_EVERY", 0.2)
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    beats = []

    def silent(job, report):
        start = Job.objects.get(pk=job.pk).heartbeat_at
        time.sleep(1.0)
        beats.append(Job.objects.get(pk=job.pk).heartbeat_at > start)

    jobs.job_run(job_id=job.pk, worker="w", service=silent)
    assert beats == [True]
    assert threading.active_count() < 50


def test_reaper_requeues_then_fails_dead_workers(
    project, django_capture_on_commit_callbacks
):
    job = Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM)
    now = timezone.now()
    jobs.job_claim(job_id=job.pk, worker="dead", now=now)
    later = now + timedelta(seconds=jobs.STALE_AFTER + 5)
    with django_capture_on_commit_callbacks() as callbacks:
        assert jobs.jobs_reap_stale(now=now) == {"requeued": 0, "failed": 0}
        assert jobs.jobs_reap_stale(now=later) == {"requeued": 1, "failed": 0}
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and "stopped responding" in job.message
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, attempts=jobs.MAX_ATTEMPTS, heartbeat_at=now
    )
    assert jobs.jobs_reap_stale(now=later) == {"requeued": 0, "failed": 1}
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "no heartbeat since" in job.error
