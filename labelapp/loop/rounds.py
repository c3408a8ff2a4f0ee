"""The loop: labels → reward-model version → rejection-sampling round → comparisons.

Services called by the Celery tasks in tasks.py (thin) and by the API/pages to start
jobs by hand. ``training/`` does the ML; this module reads its inputs from the
database and writes its outputs back in single transactions.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.models import (
    Comparison,
    Job,
    ModelVersion,
    Project,
    Prompt,
    Response,
    Round,
    SFTExample,
    text_hash,
)

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
    from training.train_rm import (
        data_fingerprint,
        evaluate_pairs,
        split_train_eval,
        train,
    )

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
    version = _register(
        job, project, config, result, metrics, out_dir, status, reason, promoted
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


def _register(job, project, config, result, metrics, out_dir, status, reason, promoted):
    """Register the complete version directory in one transaction."""
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
            data_fingerprint=metrics["data_fingerprint"],
            n_pairs=metrics["n_pairs"],
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


# ------------------------------------------------------------------ rounds


def _round_for_job(job: Job) -> Round:
    """The job's round, created on the first attempt with its inputs frozen (prompt
    ids, reward version, settings) so that a retry samples the same round."""
    project = job.project
    existing = Round.objects.filter(job=job).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        last = Round.objects.filter(project=project).aggregate(m=Max("number"))["m"]
        number = 0 if last is None else last + 1
        reward = reward_version_promoted(project)
        # Prompts that have had the fewest round samples so far come first.
        prompt_ids = list(
            Prompt.objects.filter(project=project)
            .annotate(n=Count("responses", filter=Q(responses__origin="round")))
            .order_by("n", "id")
            .values_list("id", flat=True)[: project.round_prompt_limit]
        )
        return Round.objects.create(
            project=project,
            number=number,
            policy_ref=project.policy_ref,
            reward_version=reward,
            job=job,
            settings={
                "n": project.n_samples,
                "temperature": project.temperature,
                "top_p": project.top_p,
                "max_new_tokens": project.max_new_tokens,
                "pairs_per_prompt": project.pairs_per_prompt,
                # Round 0 (no reward model) can only propose random pairs.
                "pair_mix": project.pair_mix if reward else {"random": 1.0},
                "seed": job.pk,
                "prompt_ids": prompt_ids,
            },
        )


def round_run(job: Job, report: jobs.Reporter) -> dict:
    """Sample, score with the promoted reward model, store samples, SFT examples
    and the proposed comparisons — idempotently (natural keys, upserts)."""
    from training.rejection import RoundConfig, run_round
    from training.sampling import make_sampler

    rnd = _round_for_job(job)
    if rnd.status == Round.Status.DONE:
        return {"round": rnd.number, "already": "done"}
    project = job.project
    prompt_ids = rnd.settings["prompt_ids"]
    if not prompt_ids:
        raise ValidationFailed(f"project {project.name!r} has no prompts to sample")
    prompts = Prompt.objects.in_bulk(prompt_ids)
    conversations = [prompts[i].messages for i in prompt_ids]
    report(0.0, f"loading policy {rnd.policy_ref}", force=True)
    sampler = make_sampler(
        "transformers", rnd.policy_ref, artifacts_dir=settings.ARTIFACTS_DIR
    )
    scorer = None
    if rnd.reward_version is not None:
        from training.scoring import RewardScorer

        scorer = RewardScorer(rnd.reward_version.artifact_path)
    cfg = rnd.settings
    config = RoundConfig(
        n=cfg["n"],
        max_new_tokens=cfg["max_new_tokens"],
        temperature=cfg["temperature"],
        top_p=cfg["top_p"],
        seed=cfg["seed"],
        pair_mix=cfg["pair_mix"],
        pairs_per_prompt=cfg["pairs_per_prompt"],
    )
    result = run_round(
        conversations,
        sampler,
        scorer,
        config,
        progress=lambda f, m: report(0.95 * f, m),
    )
    report(0.96, "writing samples, SFT examples and comparisons", force=True)
    written = _round_write(rnd, project, prompt_ids, result)
    report(
        1.0, f"round {rnd.number}: {written['comparisons']} new comparisons", force=True
    )
    return {"round": rnd.number, **written}


def _round_write(rnd: Round, project: Project, prompt_ids: list[int], result) -> dict:
    with transaction.atomic():
        keys: dict[tuple[int, str], Response] = {}
        for pr in result.prompts:
            prompt_id = prompt_ids[pr.index]
            for sample in pr.unique:
                key = (prompt_id, text_hash(sample.text))
                keys.setdefault(
                    key,
                    Response(
                        prompt_id=prompt_id,
                        text=sample.text,
                        text_hash=key[1],
                        origin=Response.Origin.ROUND,
                        round=rnd,
                        model_ref=rnd.policy_ref,
                        token_count=sample.token_count,
                        finish_reason=sample.finish_reason or "",
                        reward=sample.score,
                        reward_version=rnd.reward_version,
                    ),
                )
        before = Response.objects.filter(prompt_id__in=prompt_ids).count()
        # Identical texts for one prompt are stored once (an earlier round or an
        # import may already hold a sample): ON CONFLICT DO NOTHING.
        Response.objects.bulk_create(list(keys.values()), ignore_conflicts=True)
        new_responses = (
            Response.objects.filter(prompt_id__in=prompt_ids).count() - before
        )
        ids = {
            (p, h): i
            for p, h, i in Response.objects.filter(
                prompt_id__in=prompt_ids, text_hash__in={k[1] for k in keys}
            ).values_list("prompt_id", "text_hash", "id")
        }
        # Latest scores for responses that existed before this round.
        if rnd.reward_version is not None:
            scored = [
                Response(pk=ids[k], reward=r.reward, reward_version=rnd.reward_version)
                for k, r in keys.items()
                if r.reward is not None
            ]
            Response.objects.bulk_update(scored, ["reward", "reward_version"])

        sft = []
        for pr in result.prompts:
            if pr.best is not None:
                prompt_id = prompt_ids[pr.index]
                sft.append(
                    SFTExample(
                        round=rnd,
                        prompt_id=prompt_id,
                        response_id=ids[(prompt_id, text_hash(pr.best.text))],
                        reward=pr.best.score,
                    )
                )
        SFTExample.objects.bulk_create(sft, ignore_conflicts=True)

        comparisons = {}
        for pair in result.pairs:
            prompt_id = prompt_ids[pair.prompt_index]
            a = ids[(prompt_id, text_hash(pair.a_text))]
            b = ids[(prompt_id, text_hash(pair.b_text))]
            if a == b:
                continue
            a, b = min(a, b), max(a, b)  # canonical orientation
            comparisons.setdefault(
                (a, b),
                Comparison(
                    project=project,
                    prompt_id=prompt_id,
                    response_a_id=a,
                    response_b_id=b,
                    origin=Comparison.Origin.ROUND,
                    round=rnd,
                    strategy=pair.strategy,
                    labels_required=project.overlap,
                    random_key=random.random(),
                ),
            )
        before_c = Comparison.objects.filter(project=project).count()
        Comparison.objects.bulk_create(
            list(comparisons.values()), ignore_conflicts=True
        )
        new_comparisons = Comparison.objects.filter(project=project).count() - before_c
        Round.objects.filter(pk=rnd.pk).update(
            status=Round.Status.DONE,
            stats=_json_safe(result.stats),
            finished_at=timezone.now(),
        )
    return {
        "responses": new_responses,
        "sft_examples": len(sft),
        "comparisons": new_comparisons,
    }


def _json_safe(value):
    """Round statistics as JSON (NaN and infinities become null)."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.loads(json.dumps(clean(value), default=float))


# ------------------------------------------------------------------ page data


def job_as_dict(job: Job) -> dict:
    return {
        "id": job.pk,
        "kind": job.kind,
        "kind_display": job.get_kind_display(),
        "status": job.status,
        "progress": round(job.progress, 4),
        "message": job.message,
        "error": job.error,
        "traceback_tail": job.traceback_tail,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def loop_overview(project: Project, *, jobs_limit: int = 50) -> dict:
    """Jobs, reward-model versions and rounds of a project, for the jobs page."""
    from training.bon_stats import flatten_round_stats

    recent_jobs = list(Job.objects.filter(project=project).order_by("-id")[:jobs_limit])
    versions = []
    for v in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.REWARD
    ).order_by("-version"):
        ev = v.metrics.get("eval") or {}
        versions.append(
            {
                "version": v.version,
                "status": v.status,
                "reason": v.status_reason,
                "n_pairs": v.n_pairs,
                "accuracy": ev.get("accuracy"),
                "log_loss": ev.get("log_loss"),
                "ece": ev.get("ece"),
                "base_ref": v.base_ref,
                "created_at": v.created_at,
            }
        )
    rounds = []
    for r in (
        Round.objects.filter(project=project)
        .annotate(
            n_comparisons=Count("comparisons", distinct=True),
            n_sft=Count("sft_examples", distinct=True),
        )
        .select_related("reward_version")
        .order_by("-number")
    ):
        rounds.append(
            {
                "number": r.number,
                "status": r.status,
                "reward_version": r.reward_version.version
                if r.reward_version
                else None,
                "n_comparisons": r.n_comparisons,
                "n_sft": r.n_sft,
                **flatten_round_stats(r.stats or {}),
            }
        )
    return {
        "jobs": [job_as_dict(j) for j in recent_jobs],
        "versions": versions,
        "rounds": rounds,
        "since_last_version": comparisons_completed_since_last_version(project),
    }
