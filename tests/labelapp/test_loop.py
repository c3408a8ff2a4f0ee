"""Loop services in-process: trigger threshold, promotion rule, registry, rounds."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from labelapp import loop
from labelapp.datasets.importing import import_files
from labelapp.jobs import Reporter
from labelapp.models import Comparison, Job, ModelVersion, Project, Round, SFTExample
from tests.training.conftest import save_tiny_base

pytestmark = pytest.mark.django_db
# The train/eval split hashes comparison ids, which differ from run to run: 20 pairs
# at 40 % make an empty side vanishingly unlikely (0.6**20 ≈ 4e-5).
N_PAIRS = 20


def test_promotion_rule():
    decide = loop.promotion_decision
    assert decide(new_acc=0.6, old_acc=None, tolerance=0, promoted_version=None) == (
        "promoted",
        "first reward model",
    )
    status, reason = decide(
        new_acc=0.70, old_acc=0.71, tolerance=0.02, promoted_version=3
    )
    assert status == "promoted" and "0.700 ≥ v3's 0.710" in reason
    status, reason = decide(
        new_acc=0.65, old_acc=0.71, tolerance=0.02, promoted_version=3
    )
    assert status == "rejected"
    assert (
        "worse than the promoted v3's 0.710" in reason and "v3 stays promoted" in reason
    )


@pytest.fixture
def project(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    base = save_tiny_base(tmp_path / "rb", "encoder")
    policy = save_tiny_base(tmp_path / "pol", "decoder", chat_template=True)
    project = Project.objects.create(
        name="loop-unit",
        reward_base_ref=str(base),
        policy_ref=str(policy),
        retrain_threshold=4,
        n_samples=3,
        max_new_tokens=4,
        round_prompt_limit=3,
        rm_config={
            "num_epochs": 1,
            "batch_size": 4,
            "max_length": 32,
            "eval_fraction": 0.4,
        },
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"what about cats {i} ?",
                    "chosen": "good",
                    "rejected": "bad",
                }
            )
            + "\n"
            for i in range(N_PAIRS)
        )
    )
    import_files(project=project, paths=[pairs])
    return project


def run(job: Job, service):
    """Run a service as a claimed job would, then mark the job finished."""
    Job.objects.filter(pk=job.pk).update(status="running", worker="t", attempts=1)
    job.refresh_from_db()
    result = service(job, Reporter(job.pk, "t"))
    Job.objects.filter(pk=job.pk).update(status="succeeded")
    return result


def test_threshold_counts_only_since_the_last_version(
    project, django_capture_on_commit_callbacks
):
    assert loop.comparisons_completed_since_last_version(project) == N_PAIRS
    with django_capture_on_commit_callbacks() as sent:
        assert loop.training_maybe_trigger(project_id=project.pk) == 1
        assert loop.training_maybe_trigger(project_id=project.pk) == 0  # active
    assert len(sent) == 1
    job = Job.objects.get(kind="train_rm")
    result = run(job, loop.reward_model_train)
    assert result["status"] == "promoted"
    version = ModelVersion.objects.get()
    assert version.metrics["data_cutoff"] and version.n_pairs == N_PAIRS
    # Nothing new completed since the version's cutoff: no new training.
    assert loop.comparisons_completed_since_last_version(project) == 0
    assert loop.training_maybe_trigger(project_id=project.pk) == 0
    # A redelivered training job finds its version registered and does nothing.
    again = run(job, loop.reward_model_train)
    assert again == {"version": 1, "status": "promoted"}
    assert ModelVersion.objects.count() == 1


def test_a_worse_version_is_kept_but_not_promoted(project, monkeypatch):
    first = Job.objects.create(project=project, kind="train_rm")
    run(first, loop.reward_model_train)
    Comparison.objects.update(completed_at=timezone.now())  # "new" labels
    monkeypatch.setattr(
        loop,
        "promotion_decision",
        lambda **kw: ("rejected", "held-out accuracy 0.100 is worse (test)"),
    )
    second = Job.objects.create(project=project, kind="train_rm")
    result = run(second, loop.reward_model_train)
    assert result["status"] == "rejected"
    v1, v2 = ModelVersion.objects.order_by("version")
    assert (v1.status, v2.status) == ("promoted", "rejected")
    assert v2.status_reason == "held-out accuracy 0.100 is worse (test)"
    assert v2.parent == v1 and v2.metrics["promoted_accuracy_on_same_eval"] is not None
    assert loop.reward_version_promoted(project) == v1


def test_round_zero_then_round_one_with_the_promoted_model(project):
    job0 = Job.objects.create(project=project, kind="round")
    r0 = run(job0, loop.round_run)
    round0 = Round.objects.get(number=0)
    assert r0["round"] == 0 and round0.reward_version is None
    assert set(round0.comparisons.values_list("strategy", flat=True)) == {"random"}
    assert not SFTExample.objects.exists()
    # Redelivery of a finished round adds nothing.
    counts = (Comparison.objects.count(), round0.responses.count())
    assert run(job0, loop.round_run) == {"round": 0, "already": "done"}
    assert counts == (Comparison.objects.count(), round0.responses.count())

    run(Job.objects.create(project=project, kind="train_rm"), loop.reward_model_train)
    job1 = Job.objects.create(project=project, kind="round")
    run(job1, loop.round_run)
    round1 = Round.objects.get(number=1)
    assert round1.reward_version == loop.reward_version_promoted(project)
    assert SFTExample.objects.filter(round=round1).count() == 3
    assert round1.stats["reward"]["mean"] is not None
    assert round1.responses.filter(reward__isnull=False).exists()
