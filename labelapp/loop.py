"""The loop: labels → reward-model version → rejection-sampling round → comparisons.

Services called by the Celery tasks in tasks.py (thin) and by the API/pages to start
jobs by hand. ``training/`` does the ML; this module reads its inputs from the
database and writes its outputs back in single transactions.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.models import Comparison, Job, ModelVersion, Project

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ selectors


def reward_version_promoted(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.filter(
        project=project,
        kind=ModelVersion.Kind.REWARD,
        status=ModelVersion.Status.PROMOTED,
    ).first()


def _last_cutoff(project: Project) -> datetime | None:
    """Completion time up to which the latest reward model already saw labels."""
    latest = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD)
        .exclude(status=ModelVersion.Status.FAILED)
        .order_by("-version")
        .first()
    )
    if latest is None or not latest.metrics.get("data_cutoff"):
        return None
    return datetime.fromisoformat(latest.metrics["data_cutoff"])


def comparisons_completed_since_last_version(project: Project) -> int:
    qs = Comparison.objects.filter(
        project=project, status=Comparison.Status.COMPLETE, p_a__isnull=False
    )
    cutoff = _last_cutoff(project)
    if cutoff is not None:
        qs = qs.filter(completed_at__gt=cutoff)
    return qs.count()


def training_pairs(
    project: Project, *, completed_before: datetime | None = None
) -> list:
    """Complete comparisons with a soft label, as ``training.data.Pair``s."""
    from training.data import Pair

    qs = Comparison.objects.filter(
        project=project, status=Comparison.Status.COMPLETE, p_a__isnull=False
    )
    if completed_before is not None:
        qs = qs.filter(completed_at__lte=completed_before)
    rows = qs.values_list(
        "id",
        "prompt__messages",
        "response_a__text",
        "response_b__text",
        "p_a",
        "mean_strength",
    ).order_by("id")
    return [
        Pair(
            conversation=tuple(messages),
            response_a=a,
            response_b=b,
            p_a=p_a,
            strength=round(strength) if strength else None,
            id=f"comparison-{cid}",
        )
        for cid, messages, a, b, p_a, strength in rows.iterator(chunk_size=2000)
    ]


# ------------------------------------------------------------------ triggers


def training_start(
    *, project: Project, created_by=None, if_active: str = "raise"
) -> Job:
    job, _ = jobs.job_enqueue(
        project=project,
        kind=Job.Kind.TRAIN_RM,
        created_by=created_by,
        if_active=if_active,
    )
    return job


def round_start(*, project: Project, created_by=None, if_active: str = "raise") -> Job:
    job, _ = jobs.job_enqueue(
        project=project, kind=Job.Kind.ROUND, created_by=created_by, if_active=if_active
    )
    return job


def training_maybe_trigger(*, project_id: int | None = None) -> int:
    """Start training where enough comparisons completed since the last version.

    Safe under many concurrent callers: the partial unique index on active jobs
    makes every caller after the first get the existing job back.
    """
    started = 0
    projects = Project.objects.all()
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    for project in projects:
        if Job.objects.filter(
            project=project, kind=Job.Kind.TRAIN_RM, status__in=Job.ACTIVE
        ).exists():
            continue
        if (
            comparisons_completed_since_last_version(project)
            < project.retrain_threshold
        ):
            continue
        with transaction.atomic():
            _, created = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM)
        started += int(created)
    return started


# ------------------------------------------------------------------ training


def _version_dir(project: Project, job: Job) -> Path:
    root = Path(settings.ARTIFACTS_DIR) / "models" / f"project-{project.pk}" / "reward"
    return root / f"job-{job.pk}-attempt-{job.attempts}"


def reward_model_train(job: Job, report: jobs.Reporter) -> dict:
    """Train a reward model from the project's labels; register and maybe promote."""
    from training.config import RewardConfig
    from training.train_rm import evaluate_pairs, split_train_eval, train

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
    result = train(
        pairs,
        config,
        progress=lambda f, m: report(0.9 * f, m),
        out_dir=out_dir,
        artifacts_dir=settings.ARTIFACTS_DIR,
    )
    metrics = dict(result.metrics)
    metrics["data_cutoff"] = cutoff.isoformat()
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
    tolerance = project.promote_tolerance
    if old_acc is None or new_acc is None or new_acc >= old_acc - tolerance:
        status, reason = (
            ModelVersion.Status.PROMOTED,
            (
                "first reward model"
                if promoted is None
                else f"held-out accuracy {new_acc:.3f} ≥ promoted {old_acc:.3f} − {tolerance}"
                if old_acc is not None
                else "no held-out accuracy to compare"
            ),
        )
    else:
        status = ModelVersion.Status.REJECTED
        reason = (
            f"held-out accuracy {new_acc:.3f} is worse than the promoted "
            f"v{promoted.version}'s {old_acc:.3f} (tolerance {tolerance})"
        )
    version = _register(
        job, project, config, result, metrics, out_dir, status, reason, promoted
    )
    report(1.0, f"registered v{version.version} ({version.status})", force=True)
    return {"version": version.version, "status": version.status, "reason": reason}


def _register(job, project, config, result, metrics, out_dir, status, reason, promoted):
    """Register the complete version directory in one transaction."""
    from training.train_rm import data_fingerprint  # noqa: F401 - fingerprint in metrics

    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
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
            data_fingerprint=metrics.get("data_fingerprint", ""),
            n_pairs=metrics.get("n_pairs") or metrics.get("train_pairs") or 0,
            metrics=metrics,
            status=status,
            status_reason=reason,
            parent=promoted,
            job=job,
            promoted_at=now if status == ModelVersion.Status.PROMOTED else None,
        )
        if status == ModelVersion.Status.PROMOTED and project.auto_rounds:
            round_start(project=project, if_active="return")
    return version
