"""The policy step of the loop (issue 16), in-process with tiny random models:
round 0 → labels → RM v1 → round 1 → policy v1 trained, evaluated, audited by
humans through the queue, promoted → round 2 samples from policy v1."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from transformers import AutoModelForCausalLM, GenerationConfig

from labelapp.datasets.importing import import_files
from labelapp.loop import policy, policy_data, promotion, reward, rounds, triggers
from labelapp.models import (
    Comparison,
    Job,
    Membership,
    ModelVersion,
    Project,
    Response,
    Round,
)
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.projects import policy_config_problems
from tests.labelapp.test_loop import run
from tests.training.conftest import VOCAB, save_tiny_base
from training.data_guard import SFT_FILTERS

pytestmark = pytest.mark.django_db

# Permissive gate thresholds: the tiny random policy is not expected to improve;
# these tests are about the plumbing (data, registry, audit, next round), and the
# gate's rules are tested on constructed reports below.
OPEN_GATE = {
    "min_win_lower": -1.0,
    "length_ratio_min": 0.001,
    "length_ratio_max": 1000.0,
    "max_kl": 1e9,
    "min_distinct2_ratio": 0.0,
}


def stopping_policy(path, stop_every: int = 8):
    """A tiny decoder that samples (nearly) uniformly over its vocabulary and ends
    a sample on about one token in ``stop_every``: samples finish ("stop") instead
    of being cut off at the token limit (the data guard keeps only complete
    samples).

    Nearly uniform, not random weights: the output layer is scaled down so that
    every logit is within ~1e-4 of 0 whatever the CPU's floating point, and how
    often a sample is empty or truncated is a known probability rather than an
    accident of one machine's kernels (a random tiny model gave 1 usable prompt
    in 6 on one CPU and 5 on another). One optimiser step (lr 1e-2) moves the
    logits far more than that, so training still changes what it samples.
    """
    import torch

    save_tiny_base(path, "decoder", chat_template=True)
    model = AutoModelForCausalLM.from_pretrained(str(path))
    with torch.no_grad():
        model.lm_head.weight.mul_(1e-3)
    model.save_pretrained(str(path))
    gen = GenerationConfig.from_pretrained(str(path))
    gen.eos_token_id = [5, *range(12, len(VOCAB), stop_every)]
    gen.save_pretrained(str(path))
    return path


@pytest.fixture
def project(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    project = Project.objects.create(
        name="policy-loop",
        reward_base_ref=str(save_tiny_base(tmp_path / "rb", "encoder")),
        policy_ref=str(stopping_policy(tmp_path / "pol")),
        retrain_threshold=4,
        n_samples=4,
        max_new_tokens=8,
        round_prompt_limit=20,
        overlap=1,
        rm_config={
            "num_epochs": 1,
            "batch_size": 4,
            "max_length": 32,
            "eval_fraction": 0.4,
        },
        policy_min_examples=1,
        policy_config={
            "sft_learning_rate": 1e-2,
            "batch_size": 4,
            "max_length": 128,
            "guard_margin": 0.0,
            # The tiny random model's samples are random-length token soup: the
            # length floor and band would leave few examples, a policy that barely
            # moves, and audits too small to refuse (tests/training/test_data_guard.py
            # tests them).
            "guard_min_length_ratio": 0,
            "guard_pair_length_band": 0,
            "eval_prompts": 4,
            "eval_samples": 2,
            "audit_pairs": 3,
            **OPEN_GATE,
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
            for i in range(20)
        )
    )
    import_files(project=project, paths=[pairs])
    return project


@pytest.fixture
def auditor(project):
    user = get_user_model().objects.create_user("auditor", password="pw-auditor-1")
    Membership.objects.create(project=project, user=user, role="annotator")
    return user


def to_round_one(project):
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)


def label_audit(project, user, version, prefer: str) -> int:
    """Label every audit pair of ``version`` through the real queue, choosing the
    candidate's or the current policy's answer as shown on screen."""
    pairs = {p["comparison"]: p for p in version.metrics["audit"]["comparisons"]}
    # Only the audit pairs are open: everything else was labelled by the import.
    Comparison.objects.filter(project=project).exclude(pk__in=pairs).update(
        status="retired"
    )
    done = 0
    while (a := comparison_next_for(annotator=user, project=project.pk)) is not None:
        pair = pairs[a.comparison_id]
        want = pair["candidate"] if prefer == "candidate" else pair["current"]
        c = Comparison.objects.get(pk=a.comparison_id)
        left = c.response_b_id if a.swapped else c.response_a_id
        label_submit(
            assignment_id=a.pk,
            annotator=user,
            choice="a" if left == want else "b",
            strength=3,
        )
        done += 1
    return done


def test_policy_version_trained_audited_promoted_and_sampled_next(project, auditor):
    to_round_one(project)
    job = Job.objects.create(project=project, kind="train_policy")
    result = run(job, policy.policy_train)
    v1 = ModelVersion.objects.get(kind="policy")
    assert result == {"version": 1, "status": "ready", "reason": v1.status_reason}
    assert "awaiting the human audit" in v1.status_reason

    # The fixed evaluation prompts are never trained on.
    project.refresh_from_db()
    eval_ids = set(project.policy_eval_prompt_ids)
    assert len(eval_ids) == 4
    eval_texts = {
        json.dumps(m, sort_keys=True)
        for m in project.prompts.filter(pk__in=eval_ids).values_list(
            "messages", flat=True
        )
    }
    data_file = v1.metrics["data_dir"] + "/sft.jsonl.gz"
    with gzip.open(data_file, "rt") as fh:
        sft = [json.loads(line) for line in fh]
    assert len(sft) == v1.metrics["n_sft"] >= 1
    for ex in sft:
        assert json.dumps(ex["messages"][:-1], sort_keys=True) not in eval_texts
        assert ex["messages"][-1]["role"] == "assistant"
    guard = v1.metrics["guard"]["sft"]
    assert guard["kept"] == len(sft) and guard["prompts"] >= guard["kept"]
    # Each round shows its own share; the version pools them (eval prompts out).
    round1 = Round.objects.get(project=project, number=1)
    per_round = round1.stats["data_guard"]
    assert per_round["prompts"] == 20 and per_round["kept"] >= len(sft)
    assert guard["eval_prompt"] == per_round["kept"] - len(sft)  # left out at pool
    assert sum(per_round.get(f, 0) for f in ("kept", *SFT_FILTERS)) == 20

    # A standard HF directory; the metrics carry the evaluation.
    model = AutoModelForCausalLM.from_pretrained(v1.artifact_path)
    assert model.config.vocab_size == len(VOCAB)
    ev = v1.metrics["eval"]
    assert ev["win"]["n"] == 4 * 2
    assert 0 <= ev["win"]["ci_low"] <= ev["win"]["win_rate"] <= ev["win"]["ci_high"]
    assert {"kl", "length_ratio", "distinct_2_ratio", "reward_gain"} <= set(ev)

    # Audit pairs: candidate vs current on evaluation prompts, in the queue.
    audit = v1.metrics["audit"]["comparisons"]
    assert 1 <= len(audit) <= 3
    rows = Comparison.objects.filter(pk__in=[p["comparison"] for p in audit])
    assert {c.origin for c in rows} == {"audit"}
    assert {c.prompt_id for c in rows} <= eval_ids
    for p in audit:
        cand = Response.objects.get(pk=p["candidate"])
        assert cand.model_ref == v1.artifact_path

    # The checkpoint and its exact data download as one zip (admins only).
    admin = get_user_model().objects.create_user("dl-admin", password="pw-dl-1")
    Membership.objects.create(project=project, user=admin, role="admin")
    client = Client()
    client.force_login(admin)
    url = reverse("frontend:policy-download", args=[project.pk, 1])
    response = client.get(url)
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = set(archive.namelist())
    assert {
        "policy-v1/model/config.json",
        "policy-v1/model/policy_config.json",
        "policy-v1/data/sft.jsonl.gz",
        "policy-v1/data/README.md",
    } <= names
    card = archive.read("policy-v1/data/README.md").decode()
    assert f"SFT examples: {len(sft)}" in card and str(sorted(eval_ids)) in card
    client.force_login(auditor)
    assert client.get(url).status_code == 403

    # A redelivered job finds its version and writes nothing twice.
    again = run(job, policy.policy_train)
    assert again == {"version": 1, "status": "ready"}
    assert ModelVersion.objects.filter(kind="policy").count() == 1
    assert Comparison.objects.filter(origin="audit").count() == len(audit)

    # Nothing is decided while the audit is unlabelled.
    assert promotion.policy_audit_check(project) == 0
    assert label_audit(project, auditor, v1, prefer="candidate") == len(audit)
    triggers.training_maybe_trigger(project_id=project.pk)
    v1.refresh_from_db()
    assert v1.status == "promoted", v1.status_reason
    assert v1.metrics["audit"]["human"]["rate"] == 1.0
    assert "human audit agrees" in v1.status_reason

    # The next round samples from the promoted policy and records it.
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    round2 = Round.objects.get(project=project, number=2)
    assert round2.policy_version == v1
    assert round2.policy_ref == v1.artifact_path
    assert set(round2.responses.values_list("model_ref", flat=True)) == {
        v1.artifact_path
    }


@pytest.mark.slow
def test_train_nproc_trains_the_version_on_local_ranks(project, settings):
    # PAIRLOOP_TRAIN_NPROC=2: the job launches 2 gloo ranks of train-policy on
    # the exact data and settings it wrote; rank 0 saves the version.
    to_round_one(project)
    settings.PAIRLOOP_TRAIN_NPROC = 2
    job = Job.objects.create(project=project, kind="train_policy")
    result = run(job, policy.policy_train)
    v1 = ModelVersion.objects.get(kind="policy")
    assert result["version"] == 1
    dist = v1.metrics["train"]["distributed"]
    assert (dist["world_size"], dist["backend"]) == (2, "gloo")
    assert (dist["global_batch_size"], dist["per_rank_batch_size"]) == (4, 2)
    saved = json.loads(
        (Path(v1.metrics["data_dir"]) / "training_config.json").read_text()
    )
    assert saved["batch_size"] == 4 and saved["base"] == project.policy_ref
    AutoModelForCausalLM.from_pretrained(v1.artifact_path)
    assert v1.metrics["eval"]["win"]["n"] > 0  # evaluated like any version


def test_refused_when_humans_disagree_with_the_reward_model(project, auditor):
    to_round_one(project)
    run(Job.objects.create(project=project, kind="train_policy"), policy.policy_train)
    v1 = ModelVersion.objects.get(kind="policy")
    rm_rate = v1.metrics["eval"]["win"]["win_rate"]
    label_audit(project, auditor, v1, prefer="current")
    assert promotion.policy_audit_check(project) == 1
    v1.refresh_from_db()
    assert v1.status == "ready"
    assert v1.metrics["audit"]["human"]["rate"] == 0.0
    assert v1.status_reason.startswith("refused: humans")
    assert policy_data.policy_version_promoted(project) is None
    # The gap refuses when the RM liked the candidate; else the human CI does.
    assert ("disagreement" in v1.status_reason) == (rm_rate > 0.25)
    # Decided once: a later check changes nothing.
    assert promotion.policy_audit_check(project) == 0


def test_a_round_with_enough_examples_starts_policy_training(
    project, django_capture_on_commit_callbacks
):
    Project.objects.filter(pk=project.pk).update(auto_policy=True)
    project.refresh_from_db()
    run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    assert not Job.objects.filter(kind="train_policy").exists()  # no RM yet
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)
    with django_capture_on_commit_callbacks():
        result = run(
            Job.objects.create(project=project, kind="round"), rounds.round_run
        )
    assert result["policy_training"] == "started"
    assert Job.objects.filter(kind="train_policy", status="pending").count() == 1
    # Off: no job (and an active one is never doubled).
    Project.objects.filter(pk=project.pk).update(auto_policy=False)
    project.refresh_from_db()
    assert policy.policy_maybe_trigger(project) is False


def test_no_reward_model_is_a_clear_error(project):
    job = Job.objects.create(project=project, kind="train_policy")
    with pytest.raises(Exception, match="no promoted reward model"):
        run(job, policy.policy_train)
    assert not ModelVersion.objects.filter(kind="policy").exists()


def report(win=0.7, low=0.55, ratio=1.0, kl=0.5, d2=1.0):
    return {
        "win": {"win_rate": win, "ci_low": low},
        "length_ratio": ratio,
        "kl": kl,
        "distinct_2_ratio": d2,
    }


def test_the_gate_names_every_failed_check():
    cfg = {k: v for k, (_, v) in policy.POLICY_EXTRAS.items()}
    ok, reason = promotion.policy_gate(report(), cfg)
    assert ok and "CI low 0.550" in reason
    ok, reason = promotion.policy_gate(report(low=0.45), cfg)
    assert not ok and "lower bound 0.450 not above 0.5" in reason
    ok, reason = promotion.policy_gate(report(ratio=1.4, kl=9.0, d2=0.5), cfg)
    assert not ok
    assert "length ratio 1.400 outside 0.8–1.25" in reason
    assert "KL 9.000 above 5.0" in reason
    assert "distinct-2 ratio 0.500 below 0.9" in reason


def test_audit_decision():
    cfg = {k: v for k, (_, v) in policy.POLICY_EXTRAS.items()}
    ok, reason, stats = promotion.audit_decision(
        human_wins=6, n=8, rm_rate=0.7, cfg=cfg
    )
    assert ok and stats["rate"] == 0.75 and stats["ci_low"] < 0.75 < stats["ci_high"]
    ok, reason, _ = promotion.audit_decision(human_wins=2, n=8, rm_rate=0.8, cfg=cfg)
    assert not ok and "disagreement of 0.550" in reason
    # Humans liking the candidate more than the RM does is agreement enough.
    ok, reason, _ = promotion.audit_decision(human_wins=8, n=8, rm_rate=0.5, cfg=cfg)
    assert ok
    # Close to the RM, but humans clearly prefer the current policy.
    ok, reason, _ = promotion.audit_decision(human_wins=0, n=12, rm_rate=0.2, cfg=cfg)
    assert not ok and "humans prefer the current policy" in reason


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"mode": "ppo"}, "mode must be one of"),
        ({"sft_epochs": "two"}, "sft_epochs: must be a number"),
        ({"audit_pairs": -1}, "audit_pairs: must be >= 0"),
        ({"audit_pairs": 1.5}, "audit_pairs: must be an integer"),
        ({"require_approved": 1}, "require_approved: must be a boolean"),
        ({"base": "x"}, "base: unknown setting"),
        ({"length_ratio_min": 2.0}, "length_ratio_min must be > 0 and <="),
        ([], "Must be an object"),
    ],
)
def test_policy_config_problems(value, problem):
    assert any(problem in p for p in policy_config_problems(value))


def test_policy_config_accepts_the_documented_settings():
    assert (
        policy_config_problems(
            {"mode": "sft+dpo", "restart_from": "latest", "audit_pairs": 0, "beta": 0.2}
        )
        == []
    )


def test_train_policy_api_and_settings(project, api_client_for):
    admin = get_user_model().objects.create_user("padmin", password="pw-padmin-1")
    Membership.objects.create(project=project, user=admin, role="admin")
    client = api_client_for(admin)
    url = f"/api/v1/projects/{project.pk}/train-policy/"
    first = client.post(url)
    assert first.status_code == 202 and first.json()["kind"] == "train_policy"
    again = client.post(url)
    assert again.status_code == 409 and "already pending" in again.json()["detail"]

    settings_url = f"/api/v1/projects/{project.pk}/"
    bad = client.patch(
        settings_url,
        {"policy_config": {"mode": "ppo", "audit_pairs": -2}},
        format="json",
    )
    assert bad.status_code == 400
    text = " ".join(bad.json()["policy_config"])
    assert "audit_pairs: must be >= 0" in text
    project.refresh_from_db()
    assert project.policy_config["audit_pairs"] == 3  # unchanged
    ok = client.patch(
        settings_url,
        {"auto_policy": True, "policy_config": {"mode": "sft+dpo", "audit_pairs": 0}},
        format="json",
    )
    assert ok.status_code == 200, ok.json()
    project.refresh_from_db()
    assert project.auto_policy and project.policy_config["mode"] == "sft+dpo"
    assert "policy_eval_prompt_ids" in ok.json()  # read-only, shown
    ro = client.patch(settings_url, {"policy_eval_prompt_ids": [1]}, format="json")
    assert ro.status_code == 200
    project.refresh_from_db()
    assert project.policy_eval_prompt_ids == []
