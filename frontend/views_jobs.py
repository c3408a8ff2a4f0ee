"""The jobs page: jobs with live progress, reward-model and policy versions, rounds.

Reviewers and admins of a project (and staff) see it; only admins start jobs
(frontend.guards.project_page)."""

from __future__ import annotations

from django.contrib import messages
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from frontend.guards import project_page
from labelapp import access
from labelapp.errors import DomainError
from labelapp.jobs import job_retry, max_attempts
from labelapp.loop import overview
from labelapp.loop.policy import policy_archive, policy_start
from labelapp.loop.policy_data import policy_versions
from labelapp.loop.triggers import (
    round_start,
    scoring_start,
    strategy_gain_start,
    training_start,
)
from labelapp.models import Job, ModelVersion, Project, Round
from training.bon_stats import flatten_round_stats

JOBS_LIMIT = 50


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
        "duration_s": (
            round((job.finished_at - job.started_at).total_seconds(), 1)
            if job.finished_at and job.started_at
            else None
        ),
    }


def _kind_filter(request: HttpRequest) -> str | None:
    """The page's ``?kind=`` (exports crowd out training and rounds); an unknown
    kind is a 400 that names it and the known ones."""
    kind = request.GET.get("kind") or None
    if kind is not None and kind not in Job.Kind.values:
        raise BadKind(f"unknown job kind {kind!r}; known: {', '.join(Job.Kind.values)}")
    return kind


class BadKind(ValueError):
    pass


def _version_row(v: ModelVersion) -> dict:
    ev = v.metrics.get("eval") or {}
    return {
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


def _policy_row(v: ModelVersion) -> dict:
    m = v.metrics or {}
    ev = m.get("eval") or {}
    win = ev.get("win") or {}
    human = (m.get("audit") or {}).get("human") or {}
    audit = m.get("audit") or {}
    return {
        "version": v.version,
        "status": v.status,
        "reason": v.status_reason,
        "n_sft": m.get("n_sft"),
        "n_dpo": m.get("n_dpo"),
        "rm_win": win.get("win_rate"),
        "rm_low": win.get("ci_low"),
        "rm_high": win.get("ci_high"),
        "human_win": human.get("rate"),
        "human_low": human.get("ci_low"),
        "human_high": human.get("ci_high"),
        "audit_pending": bool(audit.get("pending")),
        "audit_pairs": len(audit.get("comparisons") or []),
        "reward_gain": ev.get("reward_gain"),
        "kl": ev.get("kl"),
        "length_ratio": ev.get("length_ratio"),
        "distinct_2_ratio": ev.get("distinct_2_ratio"),
        "truncation": ev.get("candidate_truncation_rate"),
        "parent": v.parent.version if v.parent_id and v.parent else None,
        "downloadable": bool(m.get("data_dir")),
    }


def _round_row(r: Round) -> dict:
    return {
        "number": r.number,
        "status": r.status,
        "policy_version": r.policy_version.version if r.policy_version else None,
        "reward_version": r.reward_version.version if r.reward_version else None,
        "n_comparisons": r.n_comparisons,
        "n_sft": r.n_sft,
        "guard_kept": ((r.stats or {}).get("data_guard") or {}).get("kept"),
        **flatten_round_stats(r.stats or {}),
    }


def _selection(project: Project) -> dict:
    found = overview.selection_status(project)
    strategy = found["strategy"]
    found["strategy_label"] = (
        strategy
        if isinstance(strategy, str)
        else " · ".join(f"{k} {v:g}" for k, v in strategy.items())
    )
    return found


def loop_overview(project: Project, kind: str | None = None) -> dict:
    """Jobs, reward-model versions and rounds of a project, for the jobs page."""
    return {
        "jobs": [
            job_as_dict(j)
            for j in overview.jobs_recent(project, limit=JOBS_LIMIT, kind=kind)
        ],
        "versions": [_version_row(v) for v in overview.reward_versions(project)],
        "policies": [_policy_row(v) for v in policy_versions(project)],
        "rounds": [_round_row(r) for r in overview.rounds_with_counts(project)],
        "since_last_version": overview.comparisons_completed_since_last_version(
            project
        ),
        "selection": _selection(project),
    }


@project_page(role="review")
@require_GET
def jobs_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    try:
        kind = _kind_filter(request)
    except BadKind as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    context = {
        "project": project,
        "overview": loop_overview(project, kind),
        "kind": kind,
        "kinds": Job.Kind.choices,
        "can_admin": access.can_admin(user=request.user, project=project),
        "max_attempts": max_attempts(),
        "active_tab": "jobs",
    }
    return render(request, "frontend/jobs.html", context)


@project_page(role="review")
@require_GET
def jobs_json(request: HttpRequest, project: Project, role: str) -> JsonResponse:
    try:
        kind = _kind_filter(request)
    except BadKind as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    jobs = overview.jobs_recent(project, limit=JOBS_LIMIT, kind=kind)
    return JsonResponse({"jobs": [job_as_dict(j) for j in jobs]})


@project_page(role="admin")
@require_POST
def jobs_start(
    request: HttpRequest, project: Project, role: str, kind: str
) -> HttpResponse:
    start = {
        "train": training_start,
        "round": round_start,
        "policy": policy_start,
        "score": scoring_start,
        "gain": strategy_gain_start,
    }.get(kind)
    if start is None:
        raise Http404("Unknown job kind.")
    try:
        job = start(project=project, created_by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Started {job.get_kind_display()} job #{job.pk}.")
    return redirect("frontend:jobs", project_id=project.pk)


@project_page(role="admin")
@require_POST
def jobs_retry(
    request: HttpRequest, project: Project, role: str, job_id: int
) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id, project=project)
    try:
        job_retry(job=job)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Job #{job.pk} queued again with a fresh budget of {max_attempts()} "
            "attempts.",
        )
    return redirect("frontend:jobs", project_id=project.pk)


@project_page(role="admin")
@require_GET
def policy_download(
    request: HttpRequest, project: Project, role: str, version: int
) -> FileResponse:
    """One policy version as ``policy-v<N>.zip``: the checkpoint (a standard Hugging
    Face directory) and the exact SFT/DPO data that trained it, with its card."""
    found = get_object_or_404(
        ModelVersion, project=project, kind=ModelVersion.Kind.POLICY, version=version
    )
    if not (found.metrics or {}).get("data_dir"):
        raise Http404("This version has no stored checkpoint.")
    path = policy_archive(found)
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
