"""The whole loop with real processes: PostgreSQL, Redis, a Django server, a Celery
worker and beat. Import prompts → round 0 (tiny policy, random pairs) → simulated
annotators label over HTTP → the threshold triggers training → a reward model is
registered and promoted → round 1 uses it → new comparisons and SFT examples.

Models are tiny and built in the test (no downloads); everything is checked in the
database, not in logs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from labelapp.broker import publisher
from labelapp.datasets.importing import import_files
from labelapp.loop.triggers import round_start, training_start
from labelapp.models import (
    Comparison,
    Job,
    Label,
    ModelVersion,
    Project,
    Response,
    Round,
    SFTExample,
)
from labelapp.tasknames import TASK_FOR_KIND
from tests.e2e.processes import wait_until
from tests.training.conftest import save_tiny_base

# Outer ceilings against hangs only: every wait below is for a state or an event,
# sized for a loaded machine (a 2-core CI runner with a busy neighbour), not a quiet
# one. Jobs are sized by steps.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]
HANG = 1800  # seconds: one stage of a test (a job, a requeue) never takes this long

PROMPTS = [
    "what is a good answer about cats ?",
    "please help me with this math question .",
    "why is music kind ?",
    "how do i think about food and travel ?",
    "is this code correct ?",
    "what about dogs ?",
]


@pytest.fixture
def tiny_models(tmp_path):
    policy = save_tiny_base(tmp_path / "policy", "decoder", chat_template=True)
    reward_base = save_tiny_base(tmp_path / "reward-base", "encoder")
    return str(policy), str(reward_base)


def make_project(tiny_models, tmp_path, **overrides) -> Project:
    policy, reward_base = tiny_models
    fields = {
        "name": "loop",
        "overlap": 1,
        "policy_ref": policy,
        "reward_base_ref": reward_base,
        "n_samples": 4,
        "max_new_tokens": 6,
        "pairs_per_prompt": 2,
        "round_prompt_limit": len(PROMPTS),
        "retrain_threshold": 8,
        "auto_rounds": True,
        "rm_config": {
            "num_epochs": 2,
            "batch_size": 4,
            "max_length": 64,
            "eval_fraction": 0.25,
            "learning_rate": 1e-3,
        },
    }
    fields.update(overrides)
    project = Project.objects.create(**fields)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    import_files(project=project, paths=[path])
    return project


def job_done(job: Job) -> Job | None:
    job.refresh_from_db()
    if job.status == Job.Status.FAILED:
        raise AssertionError(f"job {job.pk} failed: {job.error}\n{job.traceback_tail}")
    return job if job.status == Job.Status.SUCCEEDED else None


def test_the_loop_turns(procs, tiny_models, tmp_path):
    project = make_project(tiny_models, tmp_path)
    url = procs.start_web()
    procs.start_worker()
    procs.start_beat()

    # Round 0: no reward model, so random pairs only and no SFT examples.
    job0 = round_start(project=project)
    wait_until(lambda: job_done(job0), timeout=HANG, what="round 0")
    round0 = Round.objects.get(project=project, number=0)
    assert round0.reward_version is None and round0.status == "done"
    pairs0 = Comparison.objects.filter(round=round0)
    assert pairs0.count() >= len(PROMPTS)
    assert set(pairs0.values_list("strategy", flat=True)) == {"random"}
    assert not SFTExample.objects.filter(round=round0).exists()
    assert Response.objects.filter(round=round0, origin="round").count() >= 2 * len(
        PROMPTS
    )

    # Humans (simulated, over HTTP) label round 0's pairs; completing the 8th
    # comparison triggers training; the promoted version starts round 1.
    call_command(
        "simulate_annotators",
        project=project.pk,
        annotators=3,
        oracle="length",
        url=url,
        timeout=HANG,
    )
    assert Label.objects.filter(comparison__round=round0).count() == pairs0.count()
    version = wait_until(
        lambda: ModelVersion.objects.filter(project=project, status="promoted").first(),
        timeout=HANG,
        what="a promoted reward-model version",
    )
    assert version.version == 1 and version.metrics["eval"]["accuracy"] is not None
    assert version.n_pairs >= 8 and version.metrics["history"]
    assert version.data_fingerprint and version.status_reason == "first reward model"
    assert (Path(version.artifact_path) / "pairloop.json").is_file()
    assert Job.objects.filter(project=project, kind="train_rm").count() == 1
    round1 = wait_until(
        lambda: Round.objects.filter(project=project, number=1, status="done").first(),
        timeout=HANG,
        what="round 1",
    )
    assert round1.reward_version == version
    new_pairs = Comparison.objects.filter(round=round1, status="open")
    assert new_pairs.exists()
    assert set(new_pairs.values_list("strategy", flat=True)) <= {
        "best_vs_runner_up",
        "best_vs_random",
        "closest",
        "random",
    }
    sft = SFTExample.objects.filter(round=round1)
    assert sft.count() == len(PROMPTS)
    for example in sft.select_related("response"):
        assert example.response.round_id == round1.pk or example.response.reward
        best = Response.objects.filter(prompt=example.prompt, round=round1).order_by(
            "-reward"
        )[0]
        assert example.reward == pytest.approx(best.reward)


def _refreshed(job: Job) -> Job:
    job.refresh_from_db()
    if job.status == Job.Status.FAILED:
        raise AssertionError(f"job {job.pk} failed: {job.error}\n{job.traceback_tail}")
    return job


def _wait_running(job: Job, min_progress: float = 0.0) -> Job:
    def running():
        job.refresh_from_db()
        if job.status in ("succeeded", "failed"):
            raise AssertionError(
                f"job {job.pk} {job.status} before it could be killed; make it longer"
            )
        return job if job.status == "running" and job.progress > min_progress else None

    return wait_until(
        running, timeout=HANG, what=f"job {job.pk} to be running", every=0.2
    )


def long_job_project(tiny_models, tmp_path, kind: str, scale: int = 1) -> Project:
    """A project whose next ``kind`` job runs long enough, counted in steps, to be
    interrupted mid-way: a slower machine only makes it longer."""
    overrides: dict = {"auto_rounds": False}
    if kind == "train":
        # ~3,000 optimizer steps over labelled pairs (about 10 s on a quiet 2-core
        # machine), so a kill or a burst lands mid-way whatever the load.
        overrides["rm_config"] = {
            "num_epochs": 1000,
            "batch_size": 2,
            "max_length": 64,
            "progress_interval_s": 0.2,
        }
    else:
        # 6 prompts x (64 x ``scale``) samples x up to 96 new tokens.
        overrides.update(n_samples=64 * scale, max_new_tokens=96)
    project = make_project(tiny_models, tmp_path, **overrides)
    if kind == "train":
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text(
            "".join(
                json.dumps(
                    {"prompt": p, "chosen": "good helpful answer", "rejected": "bad"}
                )
                + "\n"
                for p in PROMPTS
            )
        )
        import_files(project=project, paths=[pairs])
    return project


def _counts(project: Project) -> dict[str, int]:
    return {
        "responses": Response.objects.filter(prompt__project=project).count(),
        "comparisons": Comparison.objects.filter(project=project).count(),
        "versions": ModelVersion.objects.filter(project=project).count(),
        "rounds": Round.objects.filter(project=project).count(),
        "sft": SFTExample.objects.filter(round__project=project).count(),
    }


@pytest.mark.parametrize("kind", ["train", "round"])
def test_killed_worker_job_finishes_once(procs, tiny_models, tmp_path, kind):
    project = long_job_project(tiny_models, tmp_path, kind)
    procs.start_worker("worker-1")
    procs.start_beat()
    job = (
        training_start(project=project)
        if kind == "train"
        else round_start(project=project)
    )
    _wait_running(job, min_progress=0.0)
    procs.kill("worker-1", signal.SIGKILL)

    # The reaper (a task beat sends, so worker-2 runs it) notices the missing
    # heartbeat and requeues; worker-2 claims the job and finishes it. Each stage
    # is its own event to wait for.
    procs.start_worker("worker-2")
    wait_until(
        lambda: _refreshed(job).attempts == 2,
        timeout=HANG,
        what=f"the reaper to requeue and worker-2 to claim the {kind} job",
    )
    wait_until(lambda: job_done(job), timeout=HANG, what=f"{kind} job after kill -9")
    job.refresh_from_db()
    assert job.attempts == 2
    if kind == "train":
        versions = ModelVersion.objects.filter(project=project)
        assert versions.count() == 1
        version = versions.get()
        assert version.job == job and version.artifact_path.endswith("attempt-2")
    else:
        rounds = Round.objects.filter(project=project)
        assert rounds.count() == 1 and rounds.get().status == "done"
        rnd = rounds.get()
        assert rnd.comparisons.count() <= len(PROMPTS) * project.pairs_per_prompt
    counts = _counts(project)

    # A duplicate delivery of the same task does nothing the second time.
    publisher.reset()  # the test's broker connection, after flushdb
    assert publisher.send(TASK_FOR_KIND[job.kind], args=[job.pk])
    wait_until(
        lambda: "nothing to do" in procs.log("worker-2"),
        timeout=HANG,
        what="the duplicate delivery to be seen",
    )
    job.refresh_from_db()
    assert job.attempts == 2 and job.status == "succeeded"
    assert counts == _counts(project)


TERMINATE_ALL = (
    "select pg_terminate_backend(pid) from pg_stat_activity "
    "where datname = current_database() and pid <> pg_backend_pid()"
)


@pytest.mark.parametrize("kind", ["train", "round"])
def test_dropped_connections_do_not_orphan_a_job(procs, tiny_models, tmp_path, kind):
    """Issue 14 item 2: every backend of the database is terminated three times
    while the job runs. The worker never stopped, so the job finishes once, on its
    first attempt, with one version or round and no duplicate rows."""
    # Three bursts need the job running for several heartbeats (1 s each): a
    # round of the kill test's size can finish in ~2 s on a quiet machine.
    project = long_job_project(tiny_models, tmp_path, kind, scale=5)
    procs.start_worker()
    procs.start_beat()  # the reaper runs every 2 s: it must leave the job alone
    job = (
        training_start(project=project)
        if kind == "train"
        else round_start(project=project)
    )
    _wait_running(job, min_progress=0.0)
    hit_running = 0
    for burst in range(3):
        before = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(TERMINATE_ALL)
            killed = cursor.rowcount
        assert killed >= 1, "the worker held no connection to terminate"
        # The event: the heartbeat thread reconnected and beat again, or the job
        # finished (a round on a quiet machine can outrun the later bursts).
        wait_until(
            lambda t=before: (_refreshed(job).heartbeat_at or t) > t or job_done(job),
            timeout=HANG,
            what=f"a heartbeat (or the end of the job) after burst {burst + 1}",
            every=0.1,
        )
        if job_done(job):
            break
        hit_running += 1
    assert hit_running >= 2, (
        f"the {kind} job ended after {hit_running + 1} of 3 bursts; make it longer"
    )
    wait_until(lambda: job_done(job), timeout=HANG, what=f"the {kind} job")
    job.refresh_from_db()
    assert job.attempts == 1, job.message
    assert "requeued" not in job.message
    counts = _counts(project)
    if kind == "train":
        version = ModelVersion.objects.get(project=project)
        assert version.job == job and version.artifact_path.endswith("attempt-1")
        assert counts["versions"] == 1 and counts["rounds"] == 0
    else:
        rnd = Round.objects.get(project=project)
        assert rnd.status == "done" and rnd.job == job and counts["versions"] == 0
        assert counts["sft"] == 0  # round 0: no reward model picks a best
        pairs = Comparison.objects.filter(round=rnd)
        assert (
            pairs.count() == pairs.values("response_a", "response_b").distinct().count()
        )
        assert not (
            Response.objects.filter(prompt__project=project)
            .values("prompt", "text_hash")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .exists()
        )
    assert "lost its claim" not in procs.log("worker")
