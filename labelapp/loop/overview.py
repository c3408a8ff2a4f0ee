"""Reads of the loop: promoted versions, the retraining count, training pairs, and
the jobs, versions and rounds the jobs page lists. Plain data; the page's shaping
lives in frontend/views_jobs.py."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count

from labelapp.models import Comparison, Job, ModelVersion, Project, Round
from training.data import Pair


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
) -> list[Pair]:
    """Complete comparisons with a soft label, as ``training.data.Pair``s."""
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


def jobs_recent(
    project: Project, *, limit: int = 50, kind: str | None = None
) -> list[Job]:
    jobs = Job.objects.filter(project=project)
    if kind:
        jobs = jobs.filter(kind=kind)
    return list(jobs.order_by("-id")[:limit])


def reward_versions(project: Project) -> list[ModelVersion]:
    return list(
        ModelVersion.objects.filter(
            project=project, kind=ModelVersion.Kind.REWARD
        ).order_by("-version")
    )


def rounds_with_counts(project: Project) -> list[Round]:
    """Rounds, newest first, with ``n_comparisons`` and ``n_sft`` annotated."""
    return list(
        Round.objects.filter(project=project)
        .annotate(
            n_comparisons=Count("comparisons", distinct=True),
            n_sft=Count("sft_examples", distinct=True),
        )
        .select_related("reward_version", "policy_version")
        .order_by("-number")
    )


def selection_status(project: Project) -> dict:
    """The queue's selection for the jobs page: the strategy, how many open
    comparisons hold a score, and the last scoring job that finished."""
    open_ = Comparison.objects.filter(
        project=project, status=Comparison.Status.OPEN, is_gold=False
    )
    last = (
        Job.objects.filter(
            project=project,
            kind=Job.Kind.SCORE_COMPARISONS,
            status=Job.Status.SUCCEEDED,
        )
        .order_by("-finished_at", "-id")
        .first()
    )
    return {
        "strategy": project.selection_strategy,
        "open": open_.count(),
        "scored": open_.filter(selection_score__isnull=False).count(),
        "last_job": last,
        "last_result": last.result if last else {},
    }


def strategy_label(strategy: str | dict) -> str:
    """A selection strategy as people read it: ``gap``, ``random 0.5 · gap 0.5``."""
    if isinstance(strategy, str):
        return strategy
    return " · ".join(f"{k} {float(v):g}" for k, v in sorted(strategy.items()))


def strategy_gain_report(project: Project) -> dict:
    """The project's selection strategy and what its newest finished strategy_gain
    job (labelapp.loop.strategy_gain) measured, shaped for the quality page: one
    row per strategy, the project's own marked, with the labels it needed to reach
    random's final accuracy (mean ± 95 % CI over seeds) and its final accuracy."""
    own = strategy_label(project.selection_strategy)
    job = (
        Job.objects.filter(
            project=project,
            kind=Job.Kind.STRATEGY_GAIN,
            status=Job.Status.SUCCEEDED,
        )
        .order_by("-id")
        .first()
    )
    out: dict = {"strategy": own, "job": job, "rows": []}
    result = (job.result if job else None) or {}
    budgets = result.get("budgets") or []
    for name, row in (result.get("strategies") or {}).items():
        final, final_ci = (row.get("curve") or [[None, None]])[-1]
        out["rows"].append(
            {
                "name": name,
                "own": name == own,
                "labels": row.get("labels"),
                "labels_ci": row.get("labels_ci"),
                "saved": row.get("saved"),
                "reached": row.get("reached"),
                "seeds": row.get("seeds"),
                "final": final,
                "final_ci": final_ci,
            }
        )
    if result:
        out |= {
            "pool": result.get("pool"),
            "eval": result.get("eval"),
            "seeds": result.get("seeds"),
            "max_labels": budgets[-1] if budgets else None,
            "random_final": result.get("random_final"),
            "measured_for": result.get("strategy"),
        }
    return out
