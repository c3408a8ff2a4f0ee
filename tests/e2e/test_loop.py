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

from labelapp.datasets.importing import import_files
from labelapp.loop import round_start, training_start
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
from tests.e2e.processes import wait_until
from tests.training.conftest import save_tiny_base

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

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
    wait_until(lambda: job_done(job0), timeout=240, what="round 0")
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
        timeout=120,
    )
    assert Label.objects.filter(comparison__round=round0).count() == pairs0.count()
    version = wait_until(
        lambda: ModelVersion.objects.filter(project=project, status="promoted").first(),
        timeout=240,
        what="a promoted reward-model version",
    )
    assert version.version == 1 and version.metrics["eval"]["accuracy"] is not None
    assert version.n_pairs >= 8 and version.metrics["history"]
    assert version.data_fingerprint and version.status_reason == "first reward model"
    assert (Path(version.artifact_path) / "pairloop.json").is_file()
    assert Job.objects.filter(project=project, kind="train_rm").count() == 1
    round1 = wait_until(
        lambda: Round.objects.filter(project=project, number=1, status="done").first(),
        timeout=240,
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


def _wait_running(job: Job, min_progress: float = 0.0) -> Job:
    def running():
        job.refresh_from_db()
        if job.status in ("succeeded", "failed"):
            raise AssertionError(
                f"job {job.pk} {job.status} before it could be killed; make it longer"
            )
        return job if job.status == "running" and job.progress > min_progress else None

    return wait_until(
        running, timeout=180, what=f"job {job.pk} to be running", every=0.2
    )


@pytest.mark.parametrize("kind", ["train", "round"])
def test_killed_worker_job_finishes_once(procs, tiny_models, tmp_path, kind):
    overrides = {"auto_rounds": False}
    if kind == "train":
        # Long enough to be killed mid-way: many epochs over labelled pairs.
        # ~3,000 optimizer steps: about 10 s on a quiet 2-core machine, so the kill
        # lands mid-way whatever the machine's load.
        overrides["rm_config"] = {
            "num_epochs": 1000,
            "batch_size": 2,
            "max_length": 64,
            "progress_interval_s": 0.2,
        }
    else:
        overrides.update(n_samples=64, max_new_tokens=96)
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
    procs.start_worker("worker-1")
    procs.start_beat()
    job = (
        training_start(project=project)
        if kind == "train"
        else round_start(project=project)
    )
    _wait_running(job, min_progress=0.0)
    procs.kill("worker-1", signal.SIGKILL)

    # The reaper (beat) notices the missing heartbeat and requeues; a new worker
    # claims the job and finishes it.
    procs.start_worker("worker-2")
    wait_until(lambda: job_done(job), timeout=300, what=f"{kind} job after kill -9")
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
    counts = {
        "responses": Response.objects.filter(prompt__project=project).count(),
        "comparisons": Comparison.objects.filter(project=project).count(),
        "versions": ModelVersion.objects.filter(project=project).count(),
        "rounds": Round.objects.filter(project=project).count(),
        "sft": SFTExample.objects.filter(round__project=project).count(),
    }

    # A duplicate delivery of the same task does nothing the second time.
    from config.celery import app
    from labelapp.jobs import TASKS

    app.send_task(TASKS[job.kind], args=[job.pk])
    wait_until(
        lambda: "nothing to do" in procs.log("worker-2"),
        timeout=60,
        what="the duplicate delivery to be seen",
    )
    job.refresh_from_db()
    assert job.attempts == 2 and job.status == "succeeded"
    assert counts == {
        "responses": Response.objects.filter(prompt__project=project).count(),
        "comparisons": Comparison.objects.filter(project=project).count(),
        "versions": ModelVersion.objects.filter(project=project).count(),
        "rounds": Round.objects.filter(project=project).count(),
        "sft": SFTExample.objects.filter(round__project=project).count(),
    }
