"""Whether a trained policy version replaces the current one (issue 16): the RM
gate (:func:`policy_gate`: the RM win rate's CI lower bound above ``min_win_lower``,
the length ratio inside its range, KL below ``max_kl``, distinct-2 not below
``min_distinct2_ratio`` of the current policy's), then the **human audit**: a
candidate that passes sends ``audit_pairs`` candidate-vs-current pairs (origin
``audit``) into the annotation queue, and :func:`policy_audit_check` (run by the
trigger check after labels) promotes it when the humans agree with the RM
(:func:`audit_decision`), or keeps it ``ready`` saying why."""

from __future__ import annotations

import random
from typing import Any

from django.db import transaction
from django.utils import timezone

from labelapp import jobs
from labelapp.loop.policy_data import policy_settings
from labelapp.models import (
    Comparison,
    Job,
    ModelVersion,
    Project,
    Response,
    text_hash,
)
from training.eval_policy import wilson_interval


def policy_gate(report: dict[str, Any], cfg: dict[str, Any]) -> tuple[bool, str]:
    """Whether the RM-judged evaluation allows promotion, and why (every check)."""
    win = report.get("win") or {}
    failures, passed = [], []
    lower = win.get("ci_low")
    if lower is None or not lower > cfg["min_win_lower"]:
        failures.append(
            f"RM win rate {_fmt(win.get('win_rate'))} has its 95 % CI lower bound "
            f"{_fmt(lower)} not above {cfg['min_win_lower']}"
        )
    else:
        passed.append(f"RM win rate {_fmt(win.get('win_rate'))} (CI low {_fmt(lower)})")
    ratio = report.get("length_ratio")
    lo, hi = cfg["length_ratio_min"], cfg["length_ratio_max"]
    if ratio is None or not lo <= ratio <= hi:
        failures.append(f"length ratio {_fmt(ratio)} outside {lo}–{hi}")
    kl = report.get("kl")
    if kl is not None and kl > cfg["max_kl"]:
        failures.append(f"KL {_fmt(kl)} above {cfg['max_kl']}")
    d2 = report.get("distinct_2_ratio")
    if d2 is not None and d2 < cfg["min_distinct2_ratio"]:
        failures.append(
            f"distinct-2 ratio {_fmt(d2)} below {cfg['min_distinct2_ratio']}"
        )
    if failures:
        return False, "not promoted: " + "; ".join(failures)
    return True, "; ".join(passed) + ", length, KL and distinct-2 inside thresholds"


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


def audit_decision(
    *, human_wins: float, n: int, rm_rate: float, cfg: dict[str, Any]
) -> tuple[bool, str, dict[str, Any]]:
    """Promote when the humans agree with the reward model: their win rate for the
    candidate (ties ½) is not more than ``audit_max_disagreement`` below the RM's,
    and its CI upper bound is not below ½. Humans liking the candidate *more* than
    the RM does is no reason to refuse; liking it less is the reward-hacking signal
    (ReST: reward keeps rising while human ratings fall)."""
    rate = human_wins / n
    low, high = wilson_interval(human_wins, n)
    stats = {"rate": rate, "ci_low": low, "ci_high": high, "n": n, "rm_rate": rm_rate}
    gap = rm_rate - rate
    if gap > cfg["audit_max_disagreement"]:
        return (
            False,
            f"refused: humans prefer the candidate {rate:.3f} of the time over "
            f"{n} audit pairs, the reward model {rm_rate:.3f} — a disagreement of "
            f"{gap:.3f} above the project's {cfg['audit_max_disagreement']}",
            stats,
        )
    if high < 0.5:
        return (
            False,
            f"refused: humans prefer the current policy (candidate's win rate "
            f"{rate:.3f}, CI {low:.3f}–{high:.3f}, {n} pairs)",
            stats,
        )
    return (
        True,
        f"human audit agrees: win rate {rate:.3f} (CI {low:.3f}–{high:.3f}, "
        f"{n} pairs) vs the RM's {rm_rate:.3f}",
        stats,
    )


def next_round_start(project: Project) -> None:
    """A promoted policy starts a round when the project runs rounds by itself
    (the round samples from it: labelapp.loop.rounds)."""
    if project.auto_rounds:
        jobs.job_enqueue(project=project, kind=Job.Kind.ROUND, if_active="return")


def policy_demote_others(project: Project) -> None:
    ModelVersion.objects.filter(
        project=project,
        kind=ModelVersion.Kind.POLICY,
        status=ModelVersion.Status.PROMOTED,
    ).update(status=ModelVersion.Status.READY)


def audit_pairs_send(project, number, samples, eval_ids, cand_ref, ref_ref, plan):
    """Candidate-vs-current pairs from the evaluation samples, into the queue like
    any other pair (origin ``audit``); returns [{comparison, candidate}]."""
    rng = random.Random(f"audit-{project.pk}-{number}")
    picked = [s for s in samples if s["candidate"].strip() != s["reference"].strip()]
    picked = [s for s in picked if s["candidate"].strip() and s["reference"].strip()]
    rng.shuffle(picked)
    picked = picked[: plan["wanted"]]
    out = []
    for s in picked:
        prompt_id = eval_ids[s["prompt_index"]]
        ids = []
        for text, ref in ((s["candidate"], cand_ref), (s["reference"], ref_ref)):
            response, _ = Response.objects.get_or_create(
                prompt_id=prompt_id,
                text_hash=text_hash(text),
                defaults={
                    "text": text,
                    "origin": Response.Origin.AUDIT,
                    "model_ref": ref[:300],
                },
            )
            ids.append(response.pk)
        cand, ref_id = ids
        a, b = min(ids), max(ids)
        comparison, _ = Comparison.objects.get_or_create(
            project=project,
            response_a_id=a,
            response_b_id=b,
            defaults={
                "prompt_id": prompt_id,
                "origin": Comparison.Origin.AUDIT,
                "strategy": f"audit:policy-v{number}",
                "labels_required": project.overlap,
                "random_key": rng.random(),
            },
        )
        out.append({"comparison": comparison.pk, "candidate": cand, "current": ref_id})
    return out


def policy_audit_check(project: Project) -> int:
    """Decide every candidate whose audit pairs are all labelled; returns how many
    were decided. Safe to run often (the trigger check after labels does)."""
    decided = 0
    waiting = ModelVersion.objects.filter(
        project=project,
        kind=ModelVersion.Kind.POLICY,
        status=ModelVersion.Status.READY,
        metrics__audit__pending=True,
    )
    for version in waiting:
        pairs = version.metrics["audit"]["comparisons"]
        rows = {
            c.pk: c
            for c in Comparison.objects.filter(pk__in=[p["comparison"] for p in pairs])
        }
        if any(
            rows.get(p["comparison"]) is None
            or rows[p["comparison"]].status != Comparison.Status.COMPLETE
            or rows[p["comparison"]].p_a is None
            for p in pairs
        ):
            continue
        wins = 0.0
        for p in pairs:
            c = rows[p["comparison"]]
            p_cand = c.p_a if c.response_a_id == p["candidate"] else 1 - c.p_a
            wins += 1.0 if p_cand > 0.5 else 0.5 if p_cand == 0.5 else 0.0
        rm_rate = version.metrics["eval"]["win"]["win_rate"]
        ok, reason, stats = audit_decision(
            human_wins=wins, n=len(pairs), rm_rate=rm_rate, cfg=policy_settings(project)
        )
        with transaction.atomic():
            locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
            if not (locked.metrics.get("audit") or {}).get("pending"):
                continue
            locked.metrics["audit"] |= {"pending": False, "human": stats}
            locked.status_reason = reason[:500]
            if ok:
                policy_demote_others(project)
                locked.status = ModelVersion.Status.PROMOTED
                locked.promoted_at = timezone.now()
            locked.save(
                update_fields=["metrics", "status_reason", "status", "promoted_at"]
            )
            if ok:
                next_round_start(project)
        decided += 1
    return decided
