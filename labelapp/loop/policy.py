"""The policy step of the loop (issue 16): rounds → data guard → train-policy →
eval-policy → promotion, with a human audit before a candidate replaces the policy.

- :func:`policy_data` pools every finished round's samples (Llama 2: the best
  samples of all rounds, not only the last), runs the data guard
  (``training.data_guard``) and adds the human labels as DPO pairs. Prompts of the
  project's fixed evaluation set are never trained on.
- :func:`policy_train` is the ``train_policy`` job: it writes the exact SFT/DPO data
  beside the version, trains with ``training.train_policy`` (TRL's trainers), samples
  the candidate and the current policy on the evaluation prompts with the same
  seeds, scores both with the promoted reward model (``training.eval_policy``), and
  registers a ``policy`` version, fenced by the job's claim like the other jobs.
- The gate (:func:`policy_gate`): the RM win rate's CI lower bound above
  ``min_win_lower``, the length ratio inside its range, KL below ``max_kl`` and
  distinct-2 not below ``min_distinct2_ratio`` of the current policy's. A candidate
  that passes goes to the **human audit** when ``audit_pairs`` > 0: that many
  candidate-vs-current pairs (origin ``audit``) enter the annotation queue, and
  :func:`policy_audit_check` (run by the trigger check after labels) promotes it
  when the human win rate agrees with the RM's, or keeps it ``ready`` saying why.
- The next round samples from the promoted policy version (labelapp.loop.rounds).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import reward_version_promoted
from labelapp.loop.policy_data import (
    POLICY_EXTRAS,
    data_fingerprint,
    eval_prompts_ensure,
    policy_data,
    policy_settings,
    policy_version_promoted,
)
from labelapp.loop.promotion import (
    audit_pairs_send,
    next_round_start,
    policy_demote_others,
    policy_gate,
)
from labelapp.models import (
    Job,
    ModelVersion,
    Project,
    Prompt,
)
from training.config import EvalConfig, PolicyConfig
from training.eval_policy import evaluate
from training.train_policy import prepare, train_policy


def _version_dir(project: Project, job: Job) -> Path:
    root = Path(settings.ARTIFACTS_DIR) / "models" / f"project-{project.pk}" / "policy"
    return root / f"job-{job.pk}-attempt-{job.attempts}"


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def policy_train(job: Job, report: jobs.Reporter) -> dict:
    """Train, evaluate and register one policy version (module docstring)."""
    # torch and transformers load in the worker only, not in every web process.
    from training.sampling import TransformersSampler
    from training.scoring import RewardScorer

    project = job.project
    done = ModelVersion.objects.filter(job=job).first()
    if done is not None:  # registered before the worker died: nothing left to do
        return {"version": done.version, "status": done.status}
    cfg = policy_settings(project)
    jobs.retry_db(
        lambda: eval_prompts_ensure(project, cfg["eval_prompts"]),
        what=f"job {job.pk} choosing evaluation prompts",
    )
    project.refresh_from_db()
    reward = reward_version_promoted(project)
    if reward is None:
        raise ValidationFailed(
            f"project {project.name!r} has no promoted reward model: the policy step "
            "needs one to score its rounds and to evaluate the candidate"
        )
    data = policy_data(project)
    needs_sft = "sft" in cfg.get("mode", "sft")
    if (needs_sft and not data["sft"]) or (not needs_sft and not data["dpo"]):
        raise ValidationFailed(
            f"no usable training examples after the data guard: {data['counts']}"
        )
    current = policy_version_promoted(project)
    reference_dir = current.artifact_path if current else project.policy_ref
    options = {
        k: v for k, v in cfg.items() if k not in POLICY_EXTRAS and not k.startswith("_")
    }
    restart = options.get("restart_from", "base")
    if restart == "latest" and current is None:
        options["restart_from"] = restart = "base"  # nothing trained yet
    config = PolicyConfig(
        base=project.policy_ref,
        latest=current.artifact_path if restart == "latest" else None,
        **options,
    )
    out_dir = _version_dir(project, job)
    data_dir = out_dir.with_name(out_dir.name + "-data")
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {"sft": [], "dpo": []}
    for name in ("sft", "dpo"):
        if data[name]:
            path = data_dir / f"{name}.jsonl.gz"
            _write_jsonl_gz(path, data[name])
            files[name].append(str(path))
    report(
        0.0,
        f"training on {len(data['sft'])} SFT examples, {len(data['dpo'])} DPO pairs",
        force=True,
    )
    prepared = prepare(config, files["sft"], files["dpo"], settings.ARTIFACTS_DIR)
    if out_dir.exists():  # an earlier attempt's directory: versions never overwrite
        out_dir = out_dir.with_name(out_dir.name + f"-{timezone.now():%H%M%S%f}")
    nproc = settings.PAIRLOOP_TRAIN_NPROC
    if nproc > 1:
        trained = _train_on_ranks(config, files, out_dir, data_dir, nproc, report)
    else:
        trained = train_policy(
            prepared,
            out_dir,
            progress=lambda f, m: report(0.7 * f, m),
            extra_metrics={"guard": data["counts"]},
        )
    report(0.72, "evaluating the candidate against the current policy", force=True)
    prompts = Prompt.objects.in_bulk(data["eval_prompt_ids"])
    conversations = [prompts[i].messages for i in data["eval_prompt_ids"]]
    candidate = TransformersSampler.from_ref(str(out_dir))
    reference = TransformersSampler.from_ref(
        reference_dir, artifacts_dir=settings.ARTIFACTS_DIR
    )
    eval_config = EvalConfig(
        n_samples=cfg["eval_samples"],
        max_new_tokens=project.max_new_tokens,
        temperature=project.temperature,
        top_p=project.top_p,
        seed=project.pk,
    )
    scorer = RewardScorer(reward.artifact_path)
    ev = evaluate(
        conversations,
        candidate,
        reference,
        scorer,
        eval_config,
        progress=lambda f, m: report(0.72 + 0.25 * f, m),
    )
    samples = ev.pop("samples")
    passed, reason = policy_gate(ev, cfg)
    status = ModelVersion.Status.READY
    audit = None
    if passed and cfg["audit_pairs"] > 0:
        audit = {"pending": True, "wanted": cfg["audit_pairs"]}
        reason = f"RM gate passed ({reason}); awaiting the human audit"
    elif passed:
        status = ModelVersion.Status.PROMOTED
    metrics = {
        "train": {k: v for k, v in trained.metrics.items() if k != "log"},
        "history": trained.metrics.get("log", [])[:500],
        "eval": ev,
        "guard": data["counts"],
        "n_sft": len(data["sft"]),
        "n_dpo": len(data["dpo"]),
        "data_dir": str(data_dir),
        "eval_prompt_ids": data["eval_prompt_ids"],
        "reference": reference_dir,
        "reward_version": reward.version,
        "restart_from": restart,
        "training_fingerprint": trained.fingerprint,
    }
    _data_card_write(data_dir, project, data, config, trained.fingerprint, ev)
    version = jobs.retry_db(
        lambda: _register(
            job,
            project,
            out_dir,
            metrics,
            data_fingerprint(data),
            status,
            reason,
            current,
            audit=(audit, samples, data["eval_prompt_ids"], reference_dir),
        ),
        what=f"job {job.pk} registering its policy version",
    )
    report(1.0, f"registered policy v{version.version} ({version.status})", force=True)
    return {"version": version.version, "status": version.status, "reason": reason}


@dataclass
class _Trained:
    metrics: dict
    fingerprint: dict


def _train_on_ranks(config, files, out_dir, data_dir, nproc, report) -> _Trained:
    """``PAIRLOOP_TRAIN_NPROC`` > 1: the same training as ``train_policy`` in this
    process, data-parallel on ``nproc`` local ranks of ``python -m training
    train-policy`` (the exact data files and settings as written here; rank 0
    saves the version). Ranks die with this worker, so a kill -9 leaves none."""
    from training.distributed import launch

    settings_file = data_dir / "training_config.json"
    settings_file.write_text(
        json.dumps(config.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    report(0.01, f"training on {nproc} processes", force=True)
    argv = ["train-policy", "--config", str(settings_file), "--out", str(out_dir)]
    argv += ["--sft-data", *files["sft"]] if files["sft"] else []
    argv += ["--dpo-data", *files["dpo"]] if files["dpo"] else []
    argv += ["--artifacts-dir", str(settings.ARTIFACTS_DIR)]
    launch(argv, nproc)  # LaunchError names the rank that failed and its error
    return _Trained(
        metrics=json.loads((out_dir / "metrics.json").read_text()),
        fingerprint=json.loads((out_dir / "data_fingerprint.json").read_text()),
    )


def _data_card_write(data_dir, project, data, config, fingerprint, ev) -> None:
    """README.md beside the exact training data: where it came from, what the data
    guard removed, how the version was trained and evaluated."""
    counts = data["counts"]
    win = ev.get("win") or {}
    lines = [
        f"# Policy training data: project {project.name!r}",
        "",
        "Files: `sft.jsonl.gz` (TRL conversational `messages`, the best sample of a "
        "prompt in a round, with `reward`, `median_reward`, `round`) and, for DPO, "
        "`dpo.jsonl.gz` (`prompt`, `chosen`, `rejected`; round best-vs-worst pairs "
        "and human-labelled pairs with `source: human`).",
        "",
        f"- SFT examples: {len(data['sft'])}; DPO pairs: {len(data['dpo'])}",
        f"- Data guard (SFT): {json.dumps(counts.get('sft', {}), sort_keys=True)}",
        f"- Per round: {json.dumps(counts.get('sft_per_round', {}), sort_keys=True)}",
        f"- Evaluation prompts left out (ids): {data['eval_prompt_ids']}",
        f"- Base: `{config.base}`, mode `{config.mode}`, restart from "
        f"`{config.restart_from}`",
        "- Fingerprint of the parsed examples: "
        f"`{json.dumps(fingerprint.get('examples', {}), sort_keys=True)}`",
        f"- RM win rate vs the current policy: {win.get('win_rate')} "
        f"(95 % CI {win.get('ci_low')}–{win.get('ci_high')}, n={win.get('n')})",
        "",
        "Model text is untrusted: it is what the policy wrote.",
    ]
    (data_dir / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data_dir / "training_config.json").write_text(
        json.dumps(config.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )


def policy_archive(version: ModelVersion) -> Path:
    """``policy-v<N>.zip`` with the checkpoint (``model/``) and its exact training
    data and data card (``data/``), written once beside the data and reused."""
    import zipfile

    data_dir = Path(version.metrics["data_dir"])
    target = data_dir / f"policy-v{version.version}.zip"
    if target.is_file():
        return target
    root = f"policy-v{version.version}"
    tmp = target.with_name(f".{target.name}.tmp-{timezone.now():%H%M%S%f}")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for prefix, folder in (
                ("model", Path(version.artifact_path)),
                ("data", data_dir),
            ):
                for path in sorted(folder.rglob("*")):
                    if not path.is_file() or path.name.startswith("."):
                        continue
                    if path.suffix == ".zip":
                        continue
                    stored = path.suffix in (".gz", ".safetensors", ".bin")
                    archive.write(
                        path,
                        f"{root}/{prefix}/{path.relative_to(folder)}",
                        compress_type=zipfile.ZIP_STORED
                        if stored
                        else zipfile.ZIP_DEFLATED,
                    )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _register(
    job, project, out_dir, metrics, fingerprint, status, reason, parent, *, audit
):
    """The version row and its audit pairs in one transaction, fenced by the claim."""
    with transaction.atomic():
        jobs.job_fence(job)
        Project.objects.select_for_update().get(pk=project.pk)
        done = ModelVersion.objects.filter(job=job).first()
        if done is not None:
            return done
        number = (
            ModelVersion.objects.filter(
                project=project, kind=ModelVersion.Kind.POLICY
            ).aggregate(m=Max("version"))["m"]
            or 0
        ) + 1
        plan, samples, eval_ids, reference = audit
        if plan is not None:
            plan["comparisons"] = audit_pairs_send(
                project, number, samples, eval_ids, str(out_dir), reference, plan
            )
            if not plan["comparisons"]:
                plan["pending"] = False
                status = ModelVersion.Status.PROMOTED
                reason += "; no audit pair differed, so promoted on the RM's verdict"
            metrics["audit"] = plan
        now = timezone.now()
        if status == ModelVersion.Status.PROMOTED:
            policy_demote_others(project)
        version = ModelVersion.objects.create(
            project=project,
            kind=ModelVersion.Kind.POLICY,
            version=number,
            base_ref=project.policy_ref,
            artifact_path=str(out_dir),
            data_fingerprint=fingerprint,
            n_pairs=metrics["n_sft"] + metrics["n_dpo"],
            metrics=metrics,
            status=status,
            status_reason=reason[:500],
            parent=parent,
            job=job,
            promoted_at=now if status == ModelVersion.Status.PROMOTED else None,
        )
        if status == ModelVersion.Status.PROMOTED:
            next_round_start(project)
    return version


def policy_start(*, project: Project, created_by=None, if_active: str = "raise") -> Job:
    job, _ = jobs.job_enqueue(
        project=project,
        kind=Job.Kind.TRAIN_POLICY,
        created_by=created_by,
        if_active=if_active,
    )
    return job


def policy_maybe_trigger(project: Project) -> bool:
    """After a round: start a train_policy job when ``auto_policy`` is on, the data
    guard keeps at least ``policy_min_examples`` examples and they differ from what
    the latest policy version trained on."""
    if not project.auto_policy:
        return False
    if Job.objects.filter(
        project=project, kind=Job.Kind.TRAIN_POLICY, status__in=Job.ACTIVE
    ).exists():
        return False
    if reward_version_promoted(project) is None:
        return False
    data = policy_data(project)
    if data["usable_sft"] < project.policy_min_examples:
        return False
    latest = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY)
        .exclude(status=ModelVersion.Status.FAILED)
        .order_by("-version")
        .first()
    )
    if latest is not None and latest.data_fingerprint == data_fingerprint(data):
        return False
    with transaction.atomic():
        _, created = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_POLICY)
    return created
