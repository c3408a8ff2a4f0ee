"""The policy step with real processes (PostgreSQL, Redis, a Django server, a Celery
worker and beat): import → round 0 → labels over HTTP → RM v1 → round 1 → policy v1
trained, evaluated, audited by (simulated) humans over HTTP, promoted → round 2
samples from policy v1, checked in the database. And kill -9 during train_policy:
it finishes once, with one version and no duplicate rows."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from django.core.management import call_command
from transformers import AutoModelForCausalLM

from labelapp.loop import reward, rounds
from labelapp.loop.policy import policy_start
from labelapp.loop.triggers import round_start
from labelapp.models import Comparison, Job, ModelVersion, Project, Response, Round
from tests.e2e.processes import wait_until
from tests.e2e.test_loop import HANG, _refreshed, job_done, make_project
from tests.labelapp.test_loop import run
from tests.labelapp.test_policy_loop import OPEN_GATE, stopping_policy
from tests.training.conftest import save_tiny_base

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture
def tiny_models(tmp_path):
    policy = stopping_policy(tmp_path / "policy")
    reward_base = save_tiny_base(tmp_path / "reward-base", "encoder")
    return str(policy), str(reward_base)


def policy_project(tiny_models, tmp_path, **policy_config) -> Project:
    return make_project(
        tiny_models,
        tmp_path,
        auto_policy=True,
        policy_min_examples=1,
        # The tiny policy stops on ~1 token in 8: 24 tokens leave ~4 % of its
        # samples cut off at the limit (6 would leave ~43 %), so most prompts
        # give the data guard a complete best sample.
        max_new_tokens=24,
        policy_config={
            "sft_learning_rate": 1e-2,
            "batch_size": 4,
            "max_length": 128,
            "guard_margin": 0.0,
            "eval_prompts": 2,
            "eval_samples": 2,
            "audit_pairs": 2,
            # Humans are simulated by the promoted reward model itself, so the
            # audit agrees up to ties: the test is of the plumbing.
            "audit_max_disagreement": 1.0,
            **OPEN_GATE,
            **policy_config,
        },
    )


def test_the_policy_step_turns(procs, tiny_models, tmp_path):
    # Enough SFT on round 1's few examples that the candidate's samples differ
    # from the base's on the same seeds (else no audit pair differs).
    project = policy_project(tiny_models, tmp_path, sft_epochs=8, eval_samples=4)
    url = procs.start_web()
    procs.start_worker()
    procs.start_beat()

    job0 = round_start(project=project)
    wait_until(lambda: job_done(job0), timeout=HANG, what="round 0")
    call_command(
        "simulate_annotators",
        project=project.pk,
        annotators=3,
        oracle="length",
        url=url,
        timeout=HANG,
    )
    rm = wait_until(
        lambda: ModelVersion.objects.filter(
            project=project, kind="reward", status="promoted"
        ).first(),
        timeout=HANG,
        what="a promoted reward model",
    )
    # No further reward models: the rest of the test is about the policy.
    Project.objects.filter(pk=project.pk).update(retrain_threshold=10**6)
    # RM v1 starts round 1 (auto_rounds); round 1's guarded examples start the
    # policy job (auto_policy), which registers v1 and sends audit pairs.
    v1 = wait_until(
        lambda: _policy_version(project, 1),
        timeout=HANG,
        what="policy v1",
    )
    assert Round.objects.get(project=project, number=1).reward_version == rm
    assert v1.status == "ready", v1.status_reason
    assert "awaiting the human audit" in v1.status_reason
    AutoModelForCausalLM.from_pretrained(v1.artifact_path)  # a standard HF dir
    audit = v1.metrics["audit"]["comparisons"]
    assert audit, v1.metrics["audit"]
    audit_rows = Comparison.objects.filter(pk__in=[p["comparison"] for p in audit])
    assert set(audit_rows.values_list("origin", flat=True)) == {"audit"}
    assert set(audit_rows.values_list("status", flat=True)) == {"open"}

    # Humans label what is open — round 1's pairs and the audit pairs alike.
    call_command(
        "simulate_annotators",
        project=project.pk,
        annotators=2,
        oracle=f"model:{rm.artifact_path}",
        url=url,
        timeout=HANG,
    )
    assert set(audit_rows.values_list("status", flat=True)) == {"complete"}
    wait_until(
        lambda: _promoted(v1),
        timeout=HANG,
        what="the audit's verdict and v1's promotion",
    )
    round2 = wait_until(
        lambda: Round.objects.filter(project=project, number=2, status="done").first(),
        timeout=HANG,
        what="round 2",
    )
    assert round2.policy_version_id == v1.pk
    assert round2.policy_ref == v1.artifact_path
    samples = Response.objects.filter(round=round2, origin="round")
    assert samples.exists()
    assert set(samples.values_list("model_ref", flat=True)) == {v1.artifact_path}
    assert Comparison.objects.filter(round=round2, status="open").exists()
    assert Job.objects.filter(project=project, kind="train_policy").count() >= 1


def _policy_version(project: Project, number: int) -> ModelVersion | None:
    """Policy version ``number``, or None while it is not there; a failed policy
    or round job fails the test at once, with its error, instead of a long wait."""
    failed = Job.objects.filter(
        project=project, kind__in=["train_policy", "round"], status="failed"
    ).first()
    if failed is not None:
        raise AssertionError(f"job {failed.pk} failed: {failed.error}")
    for job in Job.objects.filter(project=project, kind="round", status="succeeded"):
        started = (job.result or {}).get("policy_training") == "started"
        if job.result.get("round") == number and not started:
            rnd = Round.objects.get(project=project, number=number)
            raise AssertionError(
                f"round {number} started no policy job; its guard: "
                f"{rnd.stats.get('data_guard')}"
            )
    return ModelVersion.objects.filter(
        project=project, kind="policy", version=number
    ).first()


def _promoted(version: ModelVersion) -> ModelVersion | None:
    version.refresh_from_db()
    return version if version.status == "promoted" else None


def test_killed_worker_train_policy_finishes_once(procs, tiny_models, tmp_path):
    # Many SFT epochs over the round's examples, so the kill lands mid-training.
    project = policy_project(
        tiny_models, tmp_path, sft_epochs=400, audit_pairs=0, logging_steps=20
    )
    Project.objects.filter(pk=project.pk).update(auto_policy=False, auto_rounds=False)
    project.refresh_from_db()
    # Round 0, labels and round 1 in-process: the worker only trains the policy.
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    Comparison.objects.filter(project=project).update(
        status="complete", p_a=1.0, completed_at="2026-01-01T00:00:00Z"
    )
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    before = Response.objects.filter(prompt__project=project).count()

    procs.start_worker("worker-1")
    procs.start_beat()
    job = policy_start(project=project)
    wait_until(
        lambda: _refreshed(job).status == "running" and job.progress > 0.01,
        timeout=HANG,
        what="train_policy to be running",
    )
    procs.kill("worker-1", signal.SIGKILL)
    procs.start_worker("worker-2")
    wait_until(
        lambda: _refreshed(job).attempts == 2,
        timeout=HANG,
        what="the reaper to requeue and worker-2 to claim train_policy",
    )
    wait_until(lambda: job_done(job), timeout=HANG, what="train_policy after kill -9")
    versions = ModelVersion.objects.filter(project=project, kind="policy")
    assert versions.count() == 1
    version = versions.get()
    assert version.job_id == job.pk and "attempt-2" in version.artifact_path
    assert Path(version.artifact_path, "config.json").is_file()
    assert Response.objects.filter(prompt__project=project).count() == before
