"""One rejection-sampling round: sample with the policy, score with the promoted
reward model, store samples, SFT examples and the proposed comparisons."""

from __future__ import annotations

import json
import math
import random

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import reward_version_promoted
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

# The sampler backend a round uses when its project names none (issue 19 adds a
# per-project choice: vLLM, an OpenAI-compatible endpoint).
DEFAULT_SAMPLER_BACKEND = "transformers"


def sampler_backend_for(project: Project) -> str:
    """The backend a new round of ``project`` samples with, frozen in the round's
    settings (so a retry samples the same way). Projects have no backend field yet:
    this is the one place issue 19 changes."""
    return DEFAULT_SAMPLER_BACKEND


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
                "sampler_backend": sampler_backend_for(project),
                "prompt_ids": prompt_ids,
            },
        )


def round_run(job: Job, report: jobs.Reporter) -> dict:
    """Sample, score with the promoted reward model, store samples, SFT examples
    and the proposed comparisons — idempotently (natural keys, upserts)."""
    # torch and transformers load in the worker only, not in every web process.
    from training.rejection import RoundConfig, run_round
    from training.sampling import make_sampler

    rnd = jobs.retry_db(lambda: _round_for_job(job), what=f"job {job.pk} round")
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
        rnd.settings.get("sampler_backend", DEFAULT_SAMPLER_BACKEND),
        rnd.policy_ref,
        artifacts_dir=settings.ARTIFACTS_DIR,
    )
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
    report(0.96, "writing samples, SFT examples and comparisons", force=True)
    # The samples cost minutes: a dropped connection retries the write, in place.
    written = jobs.retry_db(
        lambda: _round_write(job, rnd, project, prompt_ids, result),
        what=f"job {job.pk} writing round {rnd.number}",
    )
    report(
        1.0, f"round {rnd.number}: {written['comparisons']} new comparisons", force=True
    )
    return {"round": rnd.number, **written}


def _round_write(
    job: Job, rnd: Round, project: Project, prompt_ids: list[int], result
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
                    random_key=rng.random(),
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

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.loads(json.dumps(clean(value), default=float))
