"""The score_comparisons job: which open comparisons the human queue serves first.

The promoted reward model scores both responses of every open comparison of the
project (per ensemble head when it has several); training.selection turns those
rewards into candidates (predicted gap, its variance across heads) and orders them
by the project's ``selection_strategy``; the place in that order is written as
``Comparison.selection_score``, which the queue's candidate query orders by within
priority, after "finish what is started" (labelapp/queue/sql/candidate.sql).
Unscored comparisons (new since the job, or every one under ``random``) come after
the scored, in the queue's random order.

The job runs after each reward-model promotion, after a round adds comparisons, when
the strategy changes (labelapp.services.projects) and on demand (the jobs page);
never for the random strategy, for which a run on demand clears the scores.
"""

from __future__ import annotations

import random

from django.db import connection, transaction

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import reward_version_promoted
from labelapp.models import Comparison, Job, Project
from training.selection import (
    Candidate,
    from_head_rewards,
    is_random,
    queue_scores,
)

# Rows per write transaction: each chunk locks its rows only for milliseconds, so a
# label (which locks its comparison) never waits long, and the queue's SKIP LOCKED
# candidate walk passes over a chunk's rows at most, never the whole queue.
WRITE_CHUNK = 100
# Responses per scoring call: a progress report after each.
SCORE_CHUNK = 256
# Writes repeated when the strategy changes while they are written, at most.
MAX_REWRITES = 3


def selection_pool(project: Project) -> list[tuple[int, list, str, str]]:
    """(comparison id, conversation, response A, response B) of each open, non-gold
    comparison, in random_key order: a strategy's ties keep the queue's random
    order (the sorts are stable). Gold items are not scored: they grade annotators,
    they do not train the reward model."""
    return list(
        Comparison.objects.filter(
            project=project, status=Comparison.Status.OPEN, is_gold=False
        )
        .order_by("random_key", "id")
        .values_list("id", "prompt__messages", "response_a__text", "response_b__text")
    )


def pool_candidates(pool, scorer, report=None) -> list[Candidate]:
    """Score each distinct (conversation, response) of ``pool`` once with
    ``scorer`` (training.scoring.RewardScorer: it keeps each item's rewards by
    head) and return one candidate per comparison, in pool order."""
    items: dict[tuple[str, str], tuple[list, str]] = {}
    for _id, conv, a, b in pool:
        for text in (a, b):
            items.setdefault(scorer.key(conv, text), (conv, text))
    todo = list(items.values())
    for start in range(0, len(todo), SCORE_CHUNK):
        part = todo[start : start + SCORE_CHUNK]
        scorer([c for c, _ in part], [t for _, t in part])
        if report is not None:
            done = start + len(part)
            report(0.9 * done / len(todo), f"scored {done:,}/{len(todo):,} responses")
    heads = scorer.head_rewards
    return [
        from_head_rewards(
            str(cid), heads[scorer.key(conv, a)], heads[scorer.key(conv, b)]
        )
        for cid, conv, a, b in pool
    ]


def _strategy(project: Project):
    return Project.objects.values_list("selection_strategy", flat=True).get(
        pk=project.pk
    )


# Rows the writer can lock now (never waiting on a label or a lease in progress),
# updated where the score changes; the rows it passed over are returned.
_WRITE_UNLOCKED = """
WITH v AS (SELECT * FROM unnest(%s::bigint[], %s::double precision[]) AS v(id, score)),
mine AS (
    SELECT c.id FROM labelapp_comparison c JOIN v ON v.id = c.id
    WHERE c.selection_score IS DISTINCT FROM v.score
    ORDER BY c.id
    FOR NO KEY UPDATE OF c SKIP LOCKED
),
written AS (
    UPDATE labelapp_comparison c SET selection_score = v.score
    FROM v, mine WHERE c.id = mine.id AND v.id = c.id
    RETURNING c.id
)
SELECT v.id FROM v JOIN labelapp_comparison c ON c.id = v.id
WHERE c.selection_score IS DISTINCT FROM v.score
  AND v.id NOT IN (SELECT id FROM written)
"""
# The rows passed over, waiting for their locks (a label's transaction: ms).
_WRITE_WAITING = """
UPDATE labelapp_comparison c SET selection_score = v.score
FROM unnest(%s::bigint[], %s::double precision[]) AS v(id, score)
WHERE c.id = v.id AND c.selection_score IS DISTINCT FROM v.score
"""


def _write_chunk(job: Job, ids: list[int], scores: list[float | None]) -> int:
    """One chunk's scores, fenced by the job's claim. Only the score column is
    written: a concurrent label's labels_count is re-read after the lock (READ
    COMMITTED) and left as it is.

    Race closed (the queue passes over a locked row): the candidate walk takes its
    row with SKIP LOCKED, so every row this write locks is passed over by ``next``
    until it commits, as a row being labelled is. Rows whose score does not change
    are not locked at all, the chunk is small, and the transaction is short; rows
    held by a label are not waited for in that transaction but written after it."""
    with transaction.atomic():
        jobs.job_fence(job)
        with connection.cursor() as cursor:
            cursor.execute(_WRITE_UNLOCKED, [ids, scores])
            passed = {row[0] for row in cursor.fetchall()}
    if not passed:
        return len(ids)
    rest = [(i, s) for i, s in zip(ids, scores, strict=True) if i in passed]
    with transaction.atomic():
        jobs.job_fence(job)
        with connection.cursor() as cursor:
            cursor.execute(_WRITE_WAITING, [[i for i, _ in rest], [s for _, s in rest]])
    return len(ids)


def selection_scores_write(
    job: Job, project: Project, candidates: list[Candidate], *, seed: int
) -> dict:
    """Write each candidate's place in the project's strategy's order (None for
    random), in short transactions fenced by the job's claim.

    The strategy is read when the writes start and again after the last: a change
    in between (the settings page clears the scores and finds this job active, so
    starts none) is written again in the new strategy's order. Safe to repeat."""
    for _ in range(MAX_REWRITES):
        strategy = _strategy(project)
        if is_random(strategy):
            # Nothing to order by: clear what an earlier strategy wrote.
            ids = list(
                Comparison.objects.filter(
                    project=project, selection_score__isnull=False
                ).values_list("id", flat=True)
            )
            scores: list[float | None] = [None] * len(ids)
        else:
            ids = [int(c.id) for c in candidates]
            scores = queue_scores(candidates, strategy, rng=random.Random(seed))
        for start in range(0, len(ids), WRITE_CHUNK):
            _write_chunk(
                job,
                ids[start : start + WRITE_CHUNK],
                scores[start : start + WRITE_CHUNK],
            )
        if _strategy(project) == strategy:
            break
    return {"strategy": strategy, "comparisons": len(ids)}


def comparisons_score(job: Job, report: jobs.Reporter) -> dict:
    """The score_comparisons job (labelapp.tasks): score the project's open
    comparisons with the promoted reward model and write their selection scores."""
    project = job.project
    strategy = _strategy(project)
    if is_random(strategy):
        report(0.5, "strategy random: clearing selection scores", force=True)
        cleared = jobs.retry_db(
            lambda: selection_scores_write(job, project, [], seed=job.pk),
            what=f"job {job.pk} clearing selection scores",
        )
        strategy = cleared["strategy"]
        if is_random(strategy):
            return cleared
        # Changed from random while clearing: a change finds this job active and
        # starts none, so this job scores for the new strategy.
    # torch and transformers load in the worker only, not in every web process.
    from training.scoring import RewardScorer

    used = None
    # A promotion while this job scores finds it active and starts no other: the
    # newer version scores again here (a pass per promotion, a few at most).
    for _ in range(MAX_REWRITES):
        reward = reward_version_promoted(project)
        if reward is None:
            raise ValidationFailed(
                f"project {project.name!r} has no promoted reward model to score its"
                " comparisons with; train one first (or set the strategy to random)"
            )
        if used is not None and reward.pk == used.pk:
            break
        pool = selection_pool(project)
        report(
            0.0,
            f"scoring {len(pool):,} open comparisons with reward model "
            f"v{reward.version}",
            force=True,
        )
        scorer = RewardScorer(reward.artifact_path)
        candidates = pool_candidates(pool, scorer, report)
        report(0.92, f"writing selection scores ({strategy})", force=True)
        result = jobs.retry_db(
            lambda c=candidates: selection_scores_write(job, project, c, seed=job.pk),
            what=f"job {job.pk} writing selection scores",
        )
        heads = len(next(iter(scorer.head_rewards.values()), [0]))
        used = reward
    report(1.0, f"{result['comparisons']:,} comparisons scored", force=True)
    return {**result, "reward_version": used.version, "heads": heads}
