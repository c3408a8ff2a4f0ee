"""Reward-model training: labels → a registered (and maybe promoted) version."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import reward_version_promoted, training_pairs
from labelapp.loop.triggers import round_start, scoring_maybe_start
from labelapp.models import Job, ModelVersion, Project
from training.config import RewardConfig


def _version_dir(project: Project, job: Job) -> Path:
    root = Path(settings.ARTIFACTS_DIR) / "models" / f"project-{project.pk}" / "reward"
    return root / f"job-{job.pk}-attempt-{job.attempts}"


def reward_model_train(job: Job, report: jobs.Reporter) -> dict:
    """Train a reward model from the project's labels; register and maybe promote."""
    # torch and transformers load in the worker only, not in every web process.
    from training.rm_data import data_fingerprint, split_train_eval
    from training.rm_eval import evaluate_pairs
    from training.train_rm import train

    project = job.project
    done = ModelVersion.objects.filter(job=job).first()
    if done is not None:  # registered before the worker died: nothing left to do
        return {"version": done.version, "status": done.status}
    cutoff = timezone.now()
    pairs = training_pairs(project, completed_before=cutoff)
    if len(pairs) < 2:
        raise ValidationFailed(
            f"project {project.name!r} has {len(pairs)} labelled comparisons; "
            "at least 2 are needed to train a reward model"
        )
    options = dict(project.rm_config or {})
    warm_start = options.pop("warm_start", True)
    config = RewardConfig(base=project.reward_base_ref, **options)
    promoted = reward_version_promoted(project)
    if warm_start and promoted and promoted.base_ref == project.reward_base_ref:
        config.init_from = promoted.artifact_path
    out_dir = _version_dir(project, job)
    report(0.0, f"training on {len(pairs):,} pairs", force=True)
    if settings.PAIRLOOP_TRAIN_NPROC > 1:
        result = _train_on_ranks(pairs, config, out_dir, settings.PAIRLOOP_TRAIN_NPROC)
    else:
        result = train(
            pairs,
            config,
            progress=lambda f, m: report(0.9 * f, m),
            out_dir=out_dir,
            artifacts_dir=settings.ARTIFACTS_DIR,
        )
    metrics = dict(result.metrics)
    metrics["data_cutoff"] = cutoff.isoformat()
    metrics["data_fingerprint"] = data_fingerprint(pairs)
    metrics["n_pairs"] = len(pairs)
    # The loss curve for the dashboards, thinned to at most ~500 points.
    step = max(1, len(result.history) // 500)
    metrics["history"] = result.history[::step]
    new_acc = (metrics.get("eval") or {}).get("accuracy")

    # Compare with the promoted version on the same held-out pairs.
    old_acc = None
    if promoted is not None and new_acc is not None:
        from training.reward_model import load_reward_model

        report(
            0.92, f"evaluating promoted v{promoted.version} on the same held-out pairs"
        )
        _, held = split_train_eval(pairs, config.eval_fraction)
        if held:
            old_model, old_tok = load_reward_model(promoted.artifact_path)
            old_acc = evaluate_pairs(
                old_model, old_tok, held, max_length=config.max_length
            ).get("accuracy")
    metrics["promoted_accuracy_on_same_eval"] = old_acc
    status, reason = promotion_decision(
        new_acc=new_acc,
        old_acc=old_acc,
        tolerance=project.promote_tolerance,
        promoted_version=promoted.version if promoted else None,
    )
    # Minutes or hours of training are behind this write: a dropped connection is
    # retried here, in place, rather than by re-running the whole service.
    version = jobs.retry_db(
        lambda: _register(
            job, project, config, metrics, out_dir, status, reason, promoted
        ),
        what=f"job {job.pk} registering its version",
    )
    report(1.0, f"registered v{version.version} ({version.status})", force=True)
    return {"version": version.version, "status": version.status, "reason": reason}


def promotion_decision(
    *,
    new_acc: float | None,
    old_acc: float | None,
    tolerance: float,
    promoted_version: int | None,
) -> tuple[str, str]:
    """Promote unless the new version is worse than the promoted one (by more than
    ``tolerance``) on the same held-out pairs; say why either way."""
    if promoted_version is None:
        return ModelVersion.Status.PROMOTED, "first reward model"
    if new_acc is None or old_acc is None:
        return ModelVersion.Status.PROMOTED, "no held-out pairs to compare on"
    if new_acc >= old_acc - tolerance:
        return (
            ModelVersion.Status.PROMOTED,
            f"held-out accuracy {new_acc:.3f} ≥ v{promoted_version}'s {old_acc:.3f}"
            + (f" − {tolerance}" if tolerance else ""),
        )
    return (
        ModelVersion.Status.REJECTED,
        f"held-out accuracy {new_acc:.3f} is worse than the promoted "
        f"v{promoted_version}'s {old_acc:.3f} on the same pairs (tolerance "
        f"{tolerance}); v{promoted_version} stays promoted",
    )


def _register(job, project, config, metrics, out_dir, status, reason, promoted):
    """Register the complete version directory in one transaction, fenced by the
    job's claim; a repeat after a commit whose answer was lost finds the version."""
    with transaction.atomic():
        jobs.job_fence(job)
        Project.objects.select_for_update().get(pk=project.pk)
        done = ModelVersion.objects.filter(job=job).first()
        if done is not None:
            return done
        number = (
            ModelVersion.objects.filter(
                project=project, kind=ModelVersion.Kind.REWARD
            ).aggregate(m=Max("version"))["m"]
            or 0
        ) + 1
        now = timezone.now()
        if status == ModelVersion.Status.PROMOTED:
            ModelVersion.objects.filter(
                project=project,
                kind=ModelVersion.Kind.REWARD,
                status=ModelVersion.Status.PROMOTED,
            ).update(status=ModelVersion.Status.READY)
        version = ModelVersion.objects.create(
            project=project,
            kind=ModelVersion.Kind.REWARD,
            version=number,
            base_ref=config.base,
            artifact_path=str(out_dir),
            data_fingerprint=metrics["data_fingerprint"],
            n_pairs=metrics["n_pairs"],
            metrics=metrics,
            status=status,
            status_reason=reason,
            parent=promoted,
            job=job,
            promoted_at=now if status == ModelVersion.Status.PROMOTED else None,
        )
        if status == ModelVersion.Status.PROMOTED:
            # The queue's order comes from the promoted model (issue 17).
            scoring_maybe_start(project)
            if project.auto_rounds:
                round_start(project=project, if_active="return")
    return version


@dataclass
class _Trained:
    metrics: dict
    history: list


def _train_on_ranks(pairs, config, out_dir: Path, nproc: int) -> _Trained:
    """``PAIRLOOP_TRAIN_NPROC`` > 1: the same training, data-parallel on ``nproc``
    local ranks of ``python -m training train-rm`` (the pairs and settings written
    beside the version, removed after; rank 0 saves the version). The ranks die
    with this worker, so a kill -9 leaves none running."""
    from training.distributed import launch
    from training.reward_model import read_meta

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-input-", dir=out_dir.parent))
    try:
        pairs_file, settings_file = work / "pairs.jsonl", work / "config.json"
        with pairs_file.open("w", encoding="utf-8") as fh:
            for p in pairs:
                record = {
                    "id": p.id,
                    "prompt": list(p.conversation),
                    "response_a": p.response_a,
                    "response_b": p.response_b,
                    "p_a": p.p_a,
                    "strength": p.strength,
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        data = config.to_dict()
        data["init_from"] = str(data["init_from"]) if data["init_from"] else None
        settings_file.write_text(json.dumps(data, default=str), encoding="utf-8")
        argv = ["train-rm", "--pairs", str(pairs_file), "--config", str(settings_file)]
        argv += ["--out", str(out_dir), "--artifacts-dir", str(settings.ARTIFACTS_DIR)]
        launch(argv, nproc)  # LaunchError names the rank that failed and its error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = read_meta(out_dir)
    return _Trained(metrics=meta["metrics"], history=meta.get("history") or [])
