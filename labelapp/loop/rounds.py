"""One rejection-sampling round: sample with the policy, score with the promoted
reward model, store samples, SFT examples and the proposed comparisons."""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import reward_version_promoted
from labelapp.loop.policy import policy_maybe_trigger
from labelapp.loop.policy_data import policy_settings, policy_version_promoted
from labelapp.loop.triggers import scoring_maybe_start
from labelapp.models import (
    Comparison,
    Job,
    Project,
    Prompt,
    Response,
    Round,
    SFTExample,
    text_hash,
)
from labelapp.services.projects import sampler_config_problems
from labelapp.services.rankings import ranking_item_create
from training.bon_stats import heads_disagreement
from training.data_guard import (
    GuardConfig,
    from_round_result,
    select_pairs,
    select_sft,
)
from training.pair_proposals import ranking_picks

# The sampler backend of rounds frozen before projects had one (issue 19).
DEFAULT_SAMPLER_BACKEND = "transformers"
# make_sampler's openai keywords that a project's sampler_config sets as they are.
_OPENAI_PASSED = ("base_url", "mode", "timeout_s", "max_retries", "max_concurrency")


def sampler_for(project: Project, policy_ref: str | None = None) -> dict[str, Any]:
    """What a new round of ``project`` samples with — backend, model and the
    backend's settings — frozen in the round's settings, so a retry samples the
    same way and the round records which server and model made its samples.

    The settings hold no secret (sampler_config_problems refuses them; asked again
    here for a project written past the services, e.g. in the admin): the API key
    is read from the environment variable ``api_key_env`` names, when the round
    runs (:func:`sampler_kwargs`)."""
    backend = project.sampler_backend or DEFAULT_SAMPLER_BACKEND
    config = dict(project.sampler_config or {})
    if problems := sampler_config_problems(backend, config):
        raise ValidationFailed(
            f"project {project.name!r} sampler_config: {'; '.join(problems)}"
        )
    # In process the round loads the policy itself: the promoted policy version
    # when there is one (policy_ref), else the project's; a server serves what
    # the config names.
    model = config["model"] if backend == "openai" else policy_ref or project.policy_ref
    return {
        "sampler_backend": backend,
        "sampler_model": model,
        "sampler_config": config,
    }


def sampler_kwargs(
    backend: str,
    config: dict[str, Any],
    *,
    artifacts_dir: Any,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """make_sampler's keywords for a round's frozen ``backend`` and ``config``; the
    API key comes from ``environ`` (the worker's environment) at run time."""
    if backend != "openai":
        return {"artifacts_dir": artifacts_dir}
    kwargs = {k: config[k] for k in _OPENAI_PASSED if k in config}
    name = config.get("api_key_env")
    if name:
        key = (os.environ if environ is None else environ).get(name)
        if not key:
            raise ValidationFailed(
                f"sampler_config.api_key_env names the environment variable {name}, "
                "which is not set in this worker; set it to the server's API key"
            )
        kwargs["api_key"] = key
    return kwargs


def _round_for_job(job: Job) -> Round:
    """The job's round, created on the first attempt with its inputs frozen (prompt
    ids, reward version, settings) so that a retry samples the same round."""
    project = job.project
    existing = Round.objects.filter(job=job).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        jobs.job_fence(job)
        Project.objects.select_for_update().get(pk=project.pk)
        existing = Round.objects.filter(job=job).first()
        if existing is not None:  # a repeat after a commit whose answer was lost
            return existing
        last = Round.objects.filter(project=project).aggregate(m=Max("number"))["m"]
        number = 0 if last is None else last + 1
        reward = reward_version_promoted(project)
        # The loop's policy step: a promoted policy version replaces the
        # project's base policy (issue 16); the round records which one.
        policy = policy_version_promoted(project)
        # Prompts that have had the fewest round samples so far come first.
        prompt_ids = list(
            Prompt.objects.filter(project=project)
            .annotate(n=Count("responses", filter=Q(responses__origin="round")))
            .order_by("n", "id")
            .values_list("id", flat=True)[: project.round_prompt_limit]
        )
        policy_ref = policy.artifact_path if policy else project.policy_ref
        return Round.objects.create(
            project=project,
            number=number,
            policy_ref=policy_ref,
            policy_version=policy,
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
                **sampler_for(project, policy_ref),
                "prompt_ids": prompt_ids,
            },
        )


def round_run(job: Job, report: jobs.Reporter) -> dict:
    """Sample, score with the promoted reward model, store samples, SFT examples
    and the proposed comparisons — idempotently (natural keys, upserts)."""
    # torch and transformers load in the worker only, not in every web process.
    from training.sampling import make_sampler

    rnd = jobs.retry_db(lambda: _round_for_job(job), what=f"job {job.pk} round")
    if rnd.status == Round.Status.DONE:
        return {"round": rnd.number, "already": "done"}
    project = job.project
    prompt_ids = rnd.settings["prompt_ids"]
    if not prompt_ids:
        raise ValidationFailed(f"project {project.name!r} has no prompts to sample")
    backend = rnd.settings.get("sampler_backend", DEFAULT_SAMPLER_BACKEND)
    sampler_config = rnd.settings.get("sampler_config", {})
    model = rnd.settings.get("sampler_model", rnd.policy_ref)
    if backend == "openai":
        where = f"model {model} at {sampler_config.get('base_url')}"
        report(0.0, f"sampling with {where}", force=True)
    else:
        report(0.0, f"loading policy {rnd.policy_ref}", force=True)
    kwargs = sampler_kwargs(
        backend, sampler_config, artifacts_dir=settings.ARTIFACTS_DIR
    )
    sampler = make_sampler(backend, model, **kwargs)
    try:
        result = _round_sample(rnd, sampler, report, prompt_ids)
    finally:
        close = getattr(sampler, "close", None)  # the openai backend's HTTP client
        if close is not None:
            close()
    # The policy step's data guard over this round, while every sample is at
    # hand (stored texts are unique per prompt, so the rows cannot say later
    # which samples a round drew); its counts go on the round.
    guard = round_guard(project, result, rnd.number)
    result.stats["data_guard"] = guard["sft_counts"]
    result.stats["data_guard_pairs"] = guard["dpo_counts"]
    report(0.96, "writing samples, SFT examples and comparisons", force=True)
    # The samples cost minutes: a dropped connection retries the write, in place.
    written = jobs.retry_db(
        lambda: _round_write(job, rnd, project, prompt_ids, result, guard),
        what=f"job {job.pk} writing round {rnd.number}",
    )
    report(
        1.0, f"round {rnd.number}: {written['comparisons']} new comparisons", force=True
    )
    # New comparisons are unscored: served after the scored until scored.
    if written["comparisons"] and jobs.retry_db(
        lambda: scoring_maybe_start(project), what=f"job {job.pk} scoring trigger"
    ):
        written["selection_scoring"] = "started"
    # A round that brings enough usable examples starts the policy step.
    if jobs.retry_db(
        lambda: policy_maybe_trigger(project), what=f"job {job.pk} policy trigger"
    ):
        written["policy_training"] = "started"
    return {"round": rnd.number, **written}


def _round_sample(
    rnd: Round, sampler: Any, report: jobs.Reporter, prompt_ids: list[int]
) -> Any:
    """The round's samples, scores and proposed pairs (training.rejection's
    RoundResult), from its frozen settings."""
    from training.rejection import RoundConfig, run_round  # torch: worker only

    prompts = Prompt.objects.in_bulk(prompt_ids)
    conversations = [prompts[i].messages for i in prompt_ids]
    scorer = None
    if rnd.reward_version is not None:
        from training.scoring import RewardScorer  # torch: worker only

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
    if scorer is not None:
        # An ensemble RM's heads as a reward-hacking monitor: how often they
        # disagree on a prompt's best sample (None with one head).
        per_prompt = [
            [
                scorer.head_rewards[scorer.key(pr.conversation, s.text)]
                for s in pr.unique
                if scorer.key(pr.conversation, s.text) in scorer.head_rewards
            ]
            for pr in result.prompts
        ]
        monitor = heads_disagreement(per_prompt)
        if monitor is not None:
            result.stats["heads_disagreement"] = monitor
    return result


def round_guard(project: Project, result, number: int) -> dict:
    """Per prompt index, the data guard's SFT example and DPO pair of one round
    (None where a filter removed it), and its counts. labelapp.loop.policy pools
    the rounds' picks (cross-round duplicates, evaluation prompts and approval are
    decided there)."""
    cfg = policy_settings(project)
    guard = GuardConfig(
        margin=float(cfg["guard_margin"]),
        min_length_ratio=float(cfg["guard_min_length_ratio"]),
        pair_length_band=float(cfg["guard_pair_length_band"]),
    )
    sft, dpo = {}, {}
    sft_counts: dict[str, int] = {}
    dpo_counts: dict[str, int] = {}
    for i, prompt in enumerate(from_round_result(result, number)):
        one = select_sft([[prompt]], guard)
        pair = select_pairs([[prompt]], guard)
        sft[i] = one.examples[0] if one.examples else None
        dpo[i] = pair.examples[0] if pair.examples else None
        for total, part in ((sft_counts, one.counts), (dpo_counts, pair.counts)):
            for k, v in part.items():
                total[k] = total.get(k, 0) + v
    return {"sft": sft, "dpo": dpo, "sft_counts": sft_counts, "dpo_counts": dpo_counts}


def _policy_picks(guard: dict, prompt_ids: list[int], ids: dict) -> dict:
    """The guard's picks as response ids (the texts are stored once per prompt)."""
    sft, dpo = [], []
    for i, ex in guard["sft"].items():
        if ex is not None:
            pid = prompt_ids[i]
            text = ex["messages"][-1]["content"]
            sft.append(
                {
                    "prompt": pid,
                    "response": ids[(pid, text_hash(text))],
                    "reward": ex["reward"],
                    "median_reward": ex["median_reward"],
                }
            )
    for i, ex in guard["dpo"].items():
        if ex is not None:
            pid = prompt_ids[i]
            dpo.append(
                {
                    "prompt": pid,
                    "chosen": ids[(pid, text_hash(ex["chosen"][0]["content"]))],
                    "rejected": ids[(pid, text_hash(ex["rejected"][0]["content"]))],
                    "chosen_reward": ex["chosen_reward"],
                    "rejected_reward": ex["rejected_reward"],
                }
            )
    return {"sft": sft, "dpo": dpo}


def _round_write(
    job: Job, rnd: Round, project: Project, prompt_ids: list[int], result, guard
) -> dict:
    """All of a round's rows in one transaction, fenced by the job's claim. Natural
    keys and ON CONFLICT DO NOTHING make a repeat write nothing twice."""
    # The pairs' queue order comes from the round's seed, so a repeat of the same
    # round (a retry, a test) draws the same keys.
    rng = random.Random(f"round-{rnd.settings.get('seed', rnd.pk)}-random-keys")
    with transaction.atomic():
        jobs.job_fence(job)
        if Round.objects.filter(pk=rnd.pk, status=Round.Status.DONE).exists():
            return {"responses": 0, "sft_examples": 0, "comparisons": 0}
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
                        model_ref=rnd.settings.get("sampler_model", rnd.policy_ref),
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
                    random_key=rng.random(),
                ),
            )
        before_c = Comparison.objects.filter(project=project).count()
        Comparison.objects.bulk_create(
            list(comparisons.values()), ignore_conflicts=True
        )
        new_comparisons = Comparison.objects.filter(project=project).count() - before_c
        ranking_items = _round_ranking_items(project, prompt_ids, result, ids)
        stats = {
            **result.stats,
            "policy_data": _policy_picks(guard, prompt_ids, ids),
            "ranking_items": ranking_items,
        }
        Round.objects.filter(pk=rnd.pk).update(
            status=Round.Status.DONE,
            stats=_json_safe(stats),
            finished_at=timezone.now(),
        )
    return {
        "responses": new_responses,
        "sft_examples": len(sft),
        "comparisons": new_comparisons,
        "ranking_items": ranking_items,
    }


def _round_ranking_items(
    project: Project, prompt_ids: list[int], result, ids: dict
) -> int:
    """With ``round_ranking_k`` >= 2, one K-way ranking task per prompt from its
    samples (training.rejection.ranking_picks: best, worst, between); ranking items
    are unique per set of responses, so a repeat creates none twice."""
    made = 0
    for pr in result.prompts if project.round_ranking_k >= 2 else ():
        picks = ranking_picks(pr.samples, project.round_ranking_k)
        prompt_id = prompt_ids[pr.index]
        response_ids = list(
            dict.fromkeys(ids[(prompt_id, text_hash(s.text))] for s in picks)
        )
        if len(response_ids) >= 2:
            ranking_item_create(
                project=project, prompt_id=prompt_id, response_ids=response_ids
            )
            made += 1
    return made


def _json_safe(value):
    """Round statistics as JSON (NaN and infinities become null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.loads(json.dumps(clean(value), default=float))
