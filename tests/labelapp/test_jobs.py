"""Job rows: atomic claim, duplicate delivery, progress, heartbeats, stale reaping."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from labelapp import jobs, tasknames
from labelapp.errors import Conflict, ValidationFailed
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
    later = timezone.now() + timedelta(seconds=jobs.stale_after() + 1)
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
def test_heartbeat_thread_beats_during_a_silent_step(project, settings):
    settings.PAIRLOOP_JOB_HEARTBEAT_SECONDS = 0.2
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
    later = now + timedelta(seconds=jobs.stale_after() + 5)
    with django_capture_on_commit_callbacks() as callbacks:
        assert jobs.jobs_reap_stale(now=now) == {
            "requeued": 0,
            "failed": 0,
            "resent": 0,
        }
        assert jobs.jobs_reap_stale(now=later) == {
            "requeued": 1,
            "failed": 0,
            "resent": 0,
        }
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and "stopped responding" in job.message
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, attempts=jobs.max_attempts(), heartbeat_at=now
    )
    assert jobs.jobs_reap_stale(now=later) == {"requeued": 0, "failed": 1, "resent": 0}
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "no heartbeat since" in job.error


def test_settings_are_read_when_called(project, settings):
    job = Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM)
    now = timezone.now()
    jobs.job_claim(job_id=job.pk, worker="w1", now=now)
    settings.PAIRLOOP_JOB_STALE_SECONDS = 10_000
    soon = now + timedelta(seconds=200)  # stale under the default 120 s, not now
    assert jobs.jobs_reap_stale(now=soon)["requeued"] == 0
    settings.PAIRLOOP_JOB_STALE_SECONDS = 60
    assert jobs.jobs_reap_stale(now=soon)["requeued"] == 1


def test_a_kind_without_a_task_is_refused(project, monkeypatch):
    # Every kind has a task today (large uploads made "import" one); a kind added
    # to the model without one must be refused, not enqueued for nobody.
    monkeypatch.delitem(jobs.TASK_FOR_KIND, Job.Kind.IMPORT)
    with pytest.raises(ValidationFailed, match="'import' do not run in the background"):
        jobs.job_enqueue(project=project, kind=Job.Kind.IMPORT)
    assert not Job.objects.exists()


def test_every_job_kind_and_beat_entry_names_a_registered_task(settings):
    from celery import current_app

    import labelapp.tasks  # noqa: F401  (registers the tasks, as a worker does)

    registered = set(current_app.tasks)
    names = [
        v for k, v in vars(tasknames).items() if k.isupper() and isinstance(v, str)
    ]
    assert set(tasknames.TASK_FOR_KIND.values()) <= set(names)
    assert set(names) <= registered, set(names) - registered
    beat = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert beat <= set(names)
    assert set(tasknames.TASK_FOR_KIND) == set(Job.Kind.values)


def test_retry_starts_a_fresh_budget(project, settings):
    settings.PAIRLOOP_JOB_MAX_ATTEMPTS = 3
    job = Job.objects.create(
        project=project, kind=Job.Kind.ROUND, status=Job.Status.FAILED, attempts=3
    )
    retried = jobs.job_retry(job=job)
    assert retried.attempts == 0
    assert retried.message == "retry requested: a fresh budget of 3 attempts"
    claimed = jobs.job_claim(job_id=job.pk, worker="w")
    assert claimed.attempts == 1
    # One more worker loss requeues it instead of failing it "after 4 attempts".
    later = timezone.now() + timedelta(seconds=jobs.stale_after() + 1)
    assert jobs.jobs_reap_stale(now=later)["requeued"] == 1


def test_pending_jobs_whose_message_was_lost_are_sent_again(
    project, django_capture_on_commit_callbacks
):
    job, _ = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM)
    created = Job.objects.get(pk=job.pk).created_at
    soon = created + timedelta(seconds=1)
    later = created + timedelta(seconds=jobs.stale_after() + 1)
    with django_capture_on_commit_callbacks() as sent:
        assert jobs.jobs_reap_stale(now=soon)["resent"] == 0  # a worker may be busy
        assert jobs.jobs_reap_stale(now=later)["resent"] == 1
        assert jobs.jobs_reap_stale(now=later)["resent"] == 0  # once per stale time
    assert len(sent) == 1


def test_a_superseded_execution_writes_nothing(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    wrote = []

    def service(job, report):
        # The reaper requeued the job during an outage and another worker took it.
        Job.objects.filter(pk=job.pk).update(worker="w2", attempts=F("attempts") + 1)
        with transaction.atomic():
            jobs.job_fence(job)
            wrote.append(job.pk)

    assert jobs.job_run(job_id=job.pk, worker="w1", service=service) is None
    job.refresh_from_db()
    assert wrote == [] and (job.status, job.worker) == (Job.Status.RUNNING, "w2")
    assert job.error == ""  # not marked failed: it is the other worker's job now


def test_fence_holds_for_the_claim_that_runs(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)

    def service(job, report):
        with transaction.atomic():
            jobs.job_fence(job)
        return {"ok": True}

    done = jobs.job_run(job_id=job.pk, worker="w1", service=service)
    assert done.status == Job.Status.SUCCEEDED and done.result == {"ok": True}


def _terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(TERMINATE_OTHERS)
        return cursor.rowcount


TERMINATE_OTHERS = (
    "select pg_terminate_backend(pid) from pg_stat_activity "
    "where datname = current_database() and pid <> pg_backend_pid()"
)


@pytest.mark.django_db(transaction=True)
def test_heartbeat_reconnects_after_its_connection_is_dropped(project, settings):
    settings.PAIRLOOP_JOB_HEARTBEAT_SECONDS = 0.1
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    seen = []

    def beat_after(t) -> bool:
        return Job.objects.get(pk=job.pk).heartbeat_at > t

    def service(job, report):
        for _ in range(3):
            # Wait until the heartbeat thread holds a connection, then drop it.
            alive = timezone.now()
            wait_for(lambda t=alive: beat_after(t), what="a heartbeat")
            assert _terminate_other_backends() >= 1
            dropped = timezone.now()
            seen.append(wait_for(lambda t=dropped: beat_after(t), what="a new beat"))

    finished = jobs.job_run(job_id=job.pk, worker="w", service=service)
    assert seen == [True] * 3 and finished.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_a_dropped_connection_is_retried_in_place_on_the_same_claim(project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND)
    calls = []

    def service(job, report):
        calls.append(job.attempts)
        if len(calls) == 1:
            with connection.cursor() as cursor:  # our own backend goes away
                cursor.execute("select pg_terminate_backend(pg_backend_pid())")
        return {"calls": len(calls)}

    finished = jobs.job_run(job_id=job.pk, worker="w", service=service)
    assert calls == [1, 1]
    assert (finished.status, finished.attempts) == (Job.Status.SUCCEEDED, 1)
    assert finished.result == {"calls": 2}


def test_retry_db_gives_up_after_its_backoff():
    naps = []

    def broken():
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError):
        jobs.retry_db(broken, what="t", backoff=(0.5, 1.0), sleep=naps.append)
    # Inside the test's transaction nothing can be retried: it raises at once.
    assert naps == []


def wait_for(check, *, what: str, ceiling: float = 60.0):
    """Poll until ``check()`` is true; the ceiling only guards against a hang."""
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {ceiling:.0f} s")
