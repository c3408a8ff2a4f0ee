"""What the policy step trains and evaluates on (issue 16): the project's policy
settings, its policy versions, the fixed evaluation prompts, and the pooled data —
every finished round's data-guard picks (Llama 2: the best samples of all rounds,
not only the last) plus the human labels as DPO pairs, evaluation prompts left out.
Reads only, except drawing the evaluation prompts once per project."""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from django.db import transaction

from labelapp.errors import ValidationFailed
from labelapp.loop.overview import training_pairs
from labelapp.models import (
    Comparison,
    ModelVersion,
    Project,
    Prompt,
    Response,
    Round,
    content_hash,
)
from training.data_guard import (
    GuardConfig,
)

# Pairloop's own settings in Project.policy_config, beside PolicyConfig's keys.
# Defaults and where they come from are in docs/loop.md ("Policy step").
POLICY_EXTRAS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "guard_margin": ((int, float), GuardConfig.margin),
    "guard_min_length_ratio": ((int, float), GuardConfig.min_length_ratio),
    "guard_pair_length_band": ((int, float), GuardConfig.pair_length_band),
    "require_approved": (bool, False),
    "eval_prompts": (int, 16),
    "eval_samples": (int, 2),
    "audit_pairs": (int, 8),
    "min_win_lower": ((int, float), 0.5),
    "length_ratio_min": ((int, float), 0.8),
    "length_ratio_max": ((int, float), 1.25),
    "max_kl": ((int, float), 5.0),
    "min_distinct2_ratio": ((int, float), 0.9),
    "audit_max_disagreement": ((int, float), 0.25),
}
# Set by Pairloop when it trains, not by the project.
POLICY_RESERVED = {"base", "latest", "device"}


def policy_settings(project: Project) -> dict[str, Any]:
    """The project's policy_config with every extra's default filled in."""
    values = dict(project.policy_config or {})
    return {k: values.get(k, default) for k, (_, default) in POLICY_EXTRAS.items()} | {
        k: v for k, v in values.items() if k not in POLICY_EXTRAS
    }


def policy_version_promoted(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.filter(
        project=project,
        kind=ModelVersion.Kind.POLICY,
        status=ModelVersion.Status.PROMOTED,
    ).first()


def policy_versions(project: Project) -> list[ModelVersion]:
    return list(
        ModelVersion.objects.filter(
            project=project, kind=ModelVersion.Kind.POLICY
        ).order_by("-version")
    )


def eval_prompt_ids(project: Project) -> list[int]:
    """The project's fixed evaluation prompts: drawn once (by the first policy
    job, with a generator seeded by the project) and kept, so later imports do
    not change the set; empty before the first policy job."""
    stored = Project.objects.filter(pk=project.pk).values_list(
        "policy_eval_prompt_ids", flat=True
    )
    return list(stored.first() or [])


def eval_prompts_ensure(project: Project, count: int) -> list[int]:
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if locked.policy_eval_prompt_ids:
            return list(locked.policy_eval_prompt_ids)
        ids = sorted(
            Prompt.objects.filter(project=project).values_list("id", flat=True)
        )
        if len(ids) < 2:
            raise ValidationFailed(
                f"project {project.name!r} has {len(ids)} prompts; the policy step "
                "needs at least 2 (some to evaluate on, the rest to train on)"
            )
        # Never more than half the prompts: the rest are the training prompts.
        k = min(count, len(ids) // 2)
        chosen = sorted(random.Random(f"eval-prompts-{project.pk}").sample(ids, k))
        Project.objects.filter(pk=project.pk).update(policy_eval_prompt_ids=chosen)
        return chosen


def _approved_response_ids(project: Project) -> set[int]:
    """Responses a human preferred in a completed comparison."""
    won = set()
    rows = Comparison.objects.filter(
        project=project, status=Comparison.Status.COMPLETE, p_a__isnull=False
    ).values_list("response_a_id", "response_b_id", "p_a")
    for a, b, p_a in rows.iterator(chunk_size=5000):
        if p_a > 0.5:
            won.add(a)
        elif p_a < 0.5:
            won.add(b)
    return won


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _pool(project: Project, exclude: set[int], what: str) -> tuple[list, dict]:
    """The rounds' guard picks of ``what`` ("sft" or "dpo"), oldest round first
    (Llama 2: the best samples of all rounds, not only the last), without the
    evaluation prompts, duplicates across rounds and — for SFT when the project
    requires it — samples no human preferred. Returns (examples, counts)."""
    cfg = policy_settings(project)
    key_name = "data_guard" if what == "sft" else "data_guard_pairs"
    done = list(
        Round.objects.filter(project=project, status=Round.Status.DONE)
        .order_by("number")
        .values_list("number", "stats")
    )
    picks = [
        (number, row)
        for number, stats in done
        for row in ((stats or {}).get("policy_data") or {}).get(what, [])
    ]
    counts: dict[str, int] = {}
    per_round: dict[int, dict[str, int]] = {}
    for number, stats in done:
        part = (stats or {}).get(key_name) or {}
        per_round[number] = dict(part)
        for k, v in part.items():
            if k != "kept":
                counts[k] = counts.get(k, 0) + v
    for k in ("eval_prompt", "not_approved", "duplicate_across_rounds", "kept"):
        counts[k] = 0
    ids = {r["response"] for _, r in picks if "response" in r}
    ids |= {r[k] for _, r in picks for k in ("chosen", "rejected") if k in r}
    texts = dict(Response.objects.filter(pk__in=ids).values_list("id", "text"))
    messages = dict(
        Prompt.objects.filter(pk__in={r["prompt"] for _, r in picks}).values_list(
            "id", "messages"
        )
    )
    approved = _approved_response_ids(project) if cfg["require_approved"] else set()
    seen: set = set()
    out = []
    for number, r in picks:
        if r["prompt"] in exclude:
            counts["eval_prompt"] += 1
            continue
        conv = list(messages[r["prompt"]])
        head = tuple(f"{m['role']}\x00{_norm(m['content'])}" for m in conv)
        if what == "sft":
            if cfg["require_approved"] and r["response"] not in approved:
                counts["not_approved"] += 1
                continue
            text = texts[r["response"]]
            key = (*head, _norm(text))
            example = {
                "messages": [*conv, {"role": "assistant", "content": text}],
                "reward": r["reward"],
                "median_reward": r["median_reward"],
                "round": number,
            }
        else:
            chosen, rejected = texts[r["chosen"]], texts[r["rejected"]]
            key = (*head, _norm(chosen), _norm(rejected))
            example = {
                "prompt": conv,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "chosen_reward": r["chosen_reward"],
                "rejected_reward": r["rejected_reward"],
                "round": number,
            }
        if key in seen:
            counts["duplicate_across_rounds"] += 1
            continue
        seen.add(key)
        counts["kept"] += 1
        out.append(example)
    return out, {"total": counts, "per_round": per_round}


def _human_pairs(project: Project, exclude: set[int]) -> list[dict]:
    """Human-labelled comparisons as DPO pairs (ties are left out)."""
    excluded = set(
        Prompt.objects.filter(pk__in=exclude).values_list("content_hash", flat=True)
    )
    out = []
    for pair in training_pairs(project):
        conv = list(pair.conversation)
        if _conversation_hash(conv) in excluded or pair.p_a == 0.5:
            continue
        chosen, rejected = (
            (pair.response_a, pair.response_b)
            if pair.p_a > 0.5
            else (pair.response_b, pair.response_a)
        )
        out.append(
            {
                "prompt": conv,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "source": "human",
            }
        )
    return out


def _conversation_hash(conv: list[dict]) -> str:
    return content_hash(conv)


def policy_data(project: Project, mode: str | None = None) -> dict[str, Any]:
    """The training data the next policy version would get, with every filter's
    count: ``{"sft": [...], "dpo": [...], "counts": {...}, "eval_prompt_ids"}``."""
    cfg = policy_settings(project)
    mode = mode or cfg.get("mode", "sft")
    exclude = set(eval_prompt_ids(project))
    sft, sft_counts = _pool(project, exclude, "sft")
    counts: dict[str, Any] = {
        "sft": sft_counts["total"],
        "sft_per_round": sft_counts["per_round"],
    }
    dpo: list[dict] = []
    if "dpo" in mode:
        pairs, pair_counts = _pool(project, exclude, "dpo")
        human = _human_pairs(project, exclude)
        dpo = [*pairs, *human]
        counts |= {
            "dpo": pair_counts["total"],
            "dpo_per_round": pair_counts["per_round"],
            "dpo_human_pairs": len(human),
        }
    return {
        "sft": sft if "sft" in mode else [],
        "dpo": dpo,
        "counts": counts,
        "usable_sft": len(sft),
        "eval_prompt_ids": sorted(exclude),
    }


def data_fingerprint(data: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in ("sft", "dpo"):
        for ex in data[name]:
            digest.update(name.encode())
            digest.update(json.dumps(ex, sort_keys=True, default=str).encode())
    return digest.hexdigest()
