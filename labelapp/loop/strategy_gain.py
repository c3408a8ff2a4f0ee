"""The strategy_gain job: how many labels the project's selection strategy saves,
measured on the project's own labels.

``bench/label_efficiency.py`` measures the strategies on shared datasets; this job
replays the same simulation (training.label_efficiency) on what the project's
annotators actually answered. Each complete, human-labelled comparison becomes a
pair whose simulated annotators answer as one of its real annotators did (rejected
labels left out); a fixed evaluation split by hashed comparison id (30 %) is never
selectable and is scored against the comparison's aggregated label (ties left
out). Every strategy, the project's own included, starts from the same random
first batch per seed and labels up to the whole pool in eight steps, with the
cheap stand-in reward model (frozen MiniLM embeddings + bootstrap linear heads).

The result (on the job) is per strategy the accuracy curve with its 95 % CI across
seeds and the labels needed to reach random's final accuracy; the quality page
shows it beside the project's strategy.
"""

from __future__ import annotations

import math

from django.db.models import Exists, OuterRef

from labelapp import jobs
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import strategy_label
from labelapp.models import Choice, Comparison, Job, Label, Project
from training.data import Pair

EVAL_FRACTION = 0.3
STEPS = 8
SEEDS = 5
# Below this many labelled comparisons the curves are noise (a first batch of
# about 5 labels and an evaluation split of about 15).
MIN_PAIRS = 60
_CHOICE_P_A = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: 0.5}


def _human_labels():
    return Label.objects.filter(source=Label.Source.HUMAN).exclude(
        review_state=Label.ReviewState.REJECTED
    )


def _replayable(project: Project):
    """Complete pairwise comparisons with an aggregate and at least one human
    label that a reviewer did not reject (gold and ranking-implied left out)."""
    return (
        Comparison.objects.filter(
            project=project,
            status=Comparison.Status.COMPLETE,
            p_a__isnull=False,
            is_gold=False,
        )
        .exclude(origin=Comparison.Origin.RANKING)
        .filter(Exists(_human_labels().filter(comparison=OuterRef("pk"))))
    )


def labelled_count(project: Project) -> int:
    """How many comparisons the job would replay."""
    return _replayable(project).count()


def labelled_answers(project: Project) -> tuple[list[Pair], list[list[float]]]:
    """The project's replayable comparisons as ``training.data.Pair`` (p_a the
    aggregate) and, per pair, the answers its annotators gave (p_a each, in the
    comparison's orientation)."""
    comparisons = list(
        _replayable(project)
        .values_list(
            "id", "prompt__messages", "response_a__text", "response_b__text", "p_a"
        )
        .order_by("id")
    )
    labels = (
        _human_labels()
        .filter(comparison__in=_replayable(project).values("id"))
        .values_list("comparison_id", "p_a", "choice")
        .order_by("id")
    )
    answers: dict[int, list[float]] = {}
    for cid, p_a, choice in labels.iterator(chunk_size=2000):
        value = p_a if p_a is not None else _CHOICE_P_A.get(choice)
        if value is not None:
            answers.setdefault(cid, []).append(float(value))
    pairs, out = [], []
    for cid, messages, a, b, p_a in comparisons:
        if cid not in answers:
            continue
        pairs.append(
            Pair(
                conversation=tuple(messages),
                response_a=a,
                response_b=b,
                p_a=p_a,
                id=f"comparison-{cid}",
            )
        )
        out.append(answers[cid])
    return pairs, out


def strategy_gain_run(job: Job, report: jobs.Reporter) -> dict:
    """Replay label selection on the project's labels (module docstring)."""
    # torch loads in the worker only.
    from training.label_efficiency import (
        STRATEGIES,
        HeadConfig,
        embed,
        run_curve,
        summarise,
        torch_threads,
    )
    from training.rm_data import split_train_eval

    project = job.project
    pairs, answers = jobs.retry_db(
        lambda: labelled_answers(project), what=f"job {job.pk} reading labels"
    )
    if len(pairs) < MIN_PAIRS:
        raise ValidationFailed(
            f"project {project.name!r} has {len(pairs)} human-labelled comparisons; "
            f"measuring a strategy's gain needs at least {MIN_PAIRS}"
        )
    _train, held = split_train_eval(pairs, EVAL_FRACTION)
    held_ids = {p.id for p in held}
    pool_i = [i for i, p in enumerate(pairs) if p.id not in held_ids]
    eval_i = [i for i, p in enumerate(pairs) if p.id in held_ids]
    truth = [pairs[i].p_a if pairs[i].p_a != 0.5 else None for i in eval_i]
    if not any(t is not None for t in truth):
        raise ValidationFailed("every held-out comparison is a tie: nothing to score")
    report(0.0, f"embedding {len(pairs):,} labelled comparisons", force=True)
    emb = embed(pairs, progress=lambda d, t: report(0.6 * d / t, "embedding"))
    x = emb[:, 0] - emb[:, 1]
    pool_x, eval_x = x[pool_i], x[eval_i]
    step = max(1, len(pool_i) // STEPS)
    budgets = [step * (k + 1) for k in range(STEPS)]
    budgets[-1] = len(pool_i)
    strategies = dict(STRATEGIES)
    own = project.selection_strategy
    own_name = strategy_label(own)
    if own_name not in strategies:
        strategies[own_name] = own
    curves: dict[str, list[list[float]]] = {name: [] for name in strategies}
    total = SEEDS * len(strategies)
    for seed in range(SEEDS):
        for n, (name, strategy) in enumerate(strategies.items()):
            with torch_threads(1):
                curve = run_curve(
                    strategy,
                    seed=seed,
                    pool_x=pool_x,
                    pool_answers=[answers[i] for i in pool_i],
                    eval_x=eval_x,
                    eval_truth=truth,
                    budgets=budgets,
                    heads=HeadConfig(),
                )
            curves[name].append(curve)
            done = seed * len(strategies) + n + 1
            report(0.6 + 0.4 * done / total, f"simulated labelling {done}/{total}")
    summary = summarise(curves, budgets)
    for row in summary["strategies"].values():
        for k in ("labels", "labels_ci", "saved"):
            if k in row and not math.isfinite(row[k]):
                row.pop(k)
    return {
        "strategy": own_name,
        "pool": len(pool_i),
        "eval": sum(t is not None for t in truth),
        "seeds": SEEDS,
        "budgets": budgets,
        **summary,
        "rm": "stand-in: frozen builtin:minilm-l6 embeddings + 5 bootstrap linear "
        "Bradley-Terry heads",
    }
