"""Loop services in-process: trigger threshold, promotion rule, registry, rounds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from django.db.models import Count
from django.utils import timezone

from labelapp.datasets.importing import import_files
from labelapp.jobs import Reporter, Superseded
from labelapp.loop import overview, reward, rounds, triggers
from labelapp.models import (
    Comparison,
    Job,
    ModelVersion,
    Project,
    RankingItem,
    Response,
    Round,
    SFTExample,
)
from tests.training.conftest import save_tiny_base

pytestmark = pytest.mark.django_db
# The train/eval split hashes comparison ids, which differ from run to run: 20 pairs
# at 40 % make an empty side vanishingly unlikely (0.6**20 ≈ 4e-5).
N_PAIRS = 20


def test_promotion_rule():
    decide = reward.promotion_decision
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
    assert overview.comparisons_completed_since_last_version(project) == N_PAIRS
    with django_capture_on_commit_callbacks() as sent:
        assert triggers.training_maybe_trigger(project_id=project.pk) == 1
        assert triggers.training_maybe_trigger(project_id=project.pk) == 0  # active
    assert len(sent) == 1
    job = Job.objects.get(kind="train_rm")
    result = run(job, reward.reward_model_train)
    assert result["status"] == "promoted"
    version = ModelVersion.objects.get()
    assert version.metrics["data_cutoff"] and version.n_pairs == N_PAIRS
    # Nothing new completed since the version's cutoff: no new training.
    assert overview.comparisons_completed_since_last_version(project) == 0
    assert triggers.training_maybe_trigger(project_id=project.pk) == 0
    # A redelivered training job finds its version registered and does nothing.
    again = run(job, reward.reward_model_train)
    assert again == {"version": 1, "status": "promoted"}
    assert ModelVersion.objects.count() == 1


@pytest.mark.slow
def test_train_nproc_trains_the_reward_model_on_local_ranks(project, settings):
    # PAIRLOOP_TRAIN_NPROC=2: the job writes its pairs and settings and launches
    # 2 gloo ranks of train-rm; the version equals the in-worker run's (same
    # pairs, seed and global batch) up to float summation order.
    Project.objects.filter(pk=project.pk).update(
        rm_config={**project.rm_config, "warm_start": False}
    )
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    settings.PAIRLOOP_TRAIN_NPROC = 2
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    one, two = ModelVersion.objects.filter(kind="reward").order_by("version")
    meta_two = json.loads((Path(two.artifact_path) / "pairloop.json").read_text())
    assert meta_two["distributed"]["world_size"] == 2
    assert (one.n_pairs, two.n_pairs) == (N_PAIRS, N_PAIRS)
    e1, e2 = one.metrics["eval"], two.metrics["eval"]
    assert e1["n"] == e2["n"] > 0 and e1["accuracy"] == e2["accuracy"]
    assert abs(e1["log_loss"] - e2["log_loss"]) < 1e-4
    assert len(two.metrics["history"]) == len(one.metrics["history"]) > 0
    # The inputs written for the ranks are gone.
    leftovers = [p.name for p in Path(two.artifact_path).parent.iterdir()]
    assert not [n for n in leftovers if "-input-" in n], leftovers


def test_a_worse_version_is_kept_but_not_promoted(project, monkeypatch):
    first = Job.objects.create(project=project, kind="train_rm")
    run(first, reward.reward_model_train)
    Comparison.objects.update(completed_at=timezone.now())  # "new" labels
    monkeypatch.setattr(
        reward,
        "promotion_decision",
        lambda **kw: ("rejected", "held-out accuracy 0.100 is worse (test)"),
    )
    second = Job.objects.create(project=project, kind="train_rm")
    result = run(second, reward.reward_model_train)
    assert result["status"] == "rejected"
    v1, v2 = ModelVersion.objects.order_by("version")
    assert (v1.status, v2.status) == ("promoted", "rejected")
    assert v2.status_reason == "held-out accuracy 0.100 is worse (test)"
    assert v2.parent == v1 and v2.metrics["promoted_accuracy_on_same_eval"] is not None
    assert overview.reward_version_promoted(project) == v1


def test_round_zero_then_round_one_with_the_promoted_model(project):
    job0 = Job.objects.create(project=project, kind="round")
    r0 = run(job0, rounds.round_run)
    round0 = Round.objects.get(number=0)
    assert r0["round"] == 0 and round0.reward_version is None
    assert set(round0.comparisons.values_list("strategy", flat=True)) == {"random"}
    assert not SFTExample.objects.exists()
    # Redelivery of a finished round adds nothing.
    counts = (Comparison.objects.count(), round0.responses.count())
    assert run(job0, rounds.round_run) == {"round": 0, "already": "done"}
    assert counts == (Comparison.objects.count(), round0.responses.count())

    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    job1 = Job.objects.create(project=project, kind="round")
    run(job1, rounds.round_run)
    round1 = Round.objects.get(number=1)
    assert round1.reward_version == overview.reward_version_promoted(project)
    assert SFTExample.objects.filter(round=round1).count() == 3
    assert round1.stats["reward"]["mean"] is not None
    assert round1.responses.filter(reward__isnull=False).exists()


def test_an_ensemble_rms_heads_monitor_the_round(project):
    # Three heads: the round records how often they disagree on a prompt's best
    # sample; a one-head RM (the test above) records nothing.
    Project.objects.filter(pk=project.pk).update(
        rm_config={**project.rm_config, "ensemble_heads": 3}
    )
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    assert "heads_disagreement" not in Round.objects.get(number=0).stats
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    round1 = Round.objects.get(number=1)
    monitor = round1.stats["heads_disagreement"]
    with_two = round1.responses.values("prompt").annotate(n=Count("pk"))
    assert monitor["heads"] == 3
    assert monitor["prompts"] == sum(1 for r in with_two if r["n"] >= 2) > 0
    assert 0 <= monitor["disagree"] <= monitor["prompts"]
    assert monitor["share"] == monitor["disagree"] / monitor["prompts"]


def test_round_keys_come_from_the_rounds_seeded_generator(project, monkeypatch):
    def unseeded():
        raise AssertionError("random_key drawn from the unseeded global generator")

    monkeypatch.setattr(random, "random", unseeded)
    job = Job.objects.create(project=project, kind="round")
    run(job, rounds.round_run)
    rnd = Round.objects.get(job=job)
    assert rnd.settings["sampler_backend"] == "transformers"
    keys = list(rnd.comparisons.order_by("id").values_list("random_key", flat=True))
    assert keys and all(0 <= k < 1 for k in keys)
    # The same seed gives the same keys: the first is the generator's first draw.
    first = random.Random(f"round-{rnd.settings['seed']}-random-keys")
    assert keys[0] == first.random()


def test_the_sampler_backend_is_read_from_the_round(project):
    job = Job.objects.create(project=project, kind="round")
    Job.objects.filter(pk=job.pk).update(status="running", worker="t", attempts=1)
    job.refresh_from_db()
    rnd = rounds._round_for_job(job)
    rnd.settings["sampler_backend"] = "no-such-backend"
    rnd.save(update_fields=["settings"])
    with pytest.raises(Exception, match="unknown sampler backend 'no-such-backend'"):
        rounds.round_run(job, Reporter(job.pk, "t"))


class _Requeued(Reporter):
    """A reporter during whose call at ``at`` the job is requeued and taken by
    another worker, as the reaper would after a long outage."""

    def __init__(self, job: Job, at: float) -> None:
        super().__init__(job.pk, job.worker)
        self.at = at

    def __call__(self, fraction, message="", force=False):
        if fraction >= self.at:
            Job.objects.filter(pk=self.job_id).update(worker="other", attempts=2)
        super().__call__(fraction, message, force)


@pytest.mark.parametrize("kind", ["train_rm", "round"])
def test_a_superseded_execution_registers_nothing(project, kind):
    job = Job.objects.create(project=project, kind=kind)
    Job.objects.filter(pk=job.pk).update(status="running", worker="t", attempts=1)
    job.refresh_from_db()
    service = reward.reward_model_train if kind == "train_rm" else rounds.round_run
    before = Comparison.objects.count()
    with pytest.raises(Superseded):
        service(job, _Requeued(job, at=0.0 if kind == "train_rm" else 0.96))
    assert not ModelVersion.objects.exists()
    assert Comparison.objects.count() == before
    assert not Round.objects.filter(status="done").exists()
    assert not SFTExample.objects.exists()


def test_a_round_proposes_k_way_ranking_tasks_from_its_samples(project):
    """With round_ranking_k, each prompt of a round also gets one ranking item of
    its samples (best, worst and between once a reward model scores them)."""
    project.round_ranking_k = 3
    project.n_samples = 4
    project.max_new_tokens = 6
    project.save()
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    job = Job.objects.create(project=project, kind="round")
    result = run(job, rounds.round_run)
    rnd = Round.objects.get(project=project, status="done")
    items = list(RankingItem.objects.filter(project=project))
    assert result["ranking_items"] == len(items) == rnd.stats["ranking_items"] > 0
    for item in items:
        # The round's samples of the prompt: new ones, and earlier responses with
        # the same text (stored once), all scored by this round's reward model.
        sampled = {
            r.pk: r.reward
            for r in Response.objects.filter(
                prompt_id=item.prompt_id, reward_version=rnd.reward_version
            )
        }
        assert 2 <= len(item.response_ids) <= 3
        assert set(item.response_ids) <= set(sampled)
        # Best and worst of the prompt's scored samples are both in the task.
        picked = sorted(sampled[i] for i in item.response_ids)
        assert picked[0] == min(sampled.values())
        assert picked[-1] == max(sampled.values())
    assert run(job, rounds.round_run) == {"round": rnd.number, "already": "done"}
    assert RankingItem.objects.filter(project=project).count() == len(items)
