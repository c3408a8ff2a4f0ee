"""The queue with selection on (issue 17): a constructed pool whose reward-model view
is planted is served in each strategy's order, within priority and after what is
started; unscored comparisons follow at random; the queue's guarantees (exact k,
leases, gold rate, no duplicates) hold while scores are rewritten under load."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from labelapp.loop.selection import selection_scores_write
from labelapp.models import Comparison, Job, Label, Project
from labelapp.queue import assignment_skip, comparison_next_for, label_submit
from training.selection import Candidate, order_pool

from ..conftest import make_comparisons, make_project, make_user

T0 = timezone.now().replace(microsecond=0)

# (r_a − r_b mean over heads, its variance across heads), planted per comparison.
PLANTED = [
    (4.0, 0.01),  # 0: sure, heads agree
    (0.05, 0.02),  # 1: a near-tie
    (1.0, 2.0),  # 2: heads disagree a lot
    (-3.0, 0.5),  # 3: a large gap, some doubt
    (-0.5, 0.0),  # 4: one head's view (no variance)
    (2.0, 0.1),  # 5
]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _gap(diff: float, var: float) -> float:
    if var > 0:
        return abs(diff) * math.sqrt(var)
    p = _sigmoid(diff)
    return abs(diff) * 4 * p * (1 - p)


# Each strategy's order of PLANTED, from the definitions (not the code).
EXPECTED = {
    # P(A ≻ B) closest to ½ first: smallest |diff| first
    "uncertainty": sorted(range(6), key=lambda i: abs(PLANTED[i][0])),
    # largest variance across heads first
    "disagreement": sorted(range(6), key=lambda i: -PLANTED[i][1]),
    # DRTS-style: large gap weighted by uncertainty
    "gap": sorted(range(6), key=lambda i: -_gap(*PLANTED[i])),
}
assert EXPECTED["uncertainty"] == [1, 4, 2, 5, 3, 0]
assert EXPECTED["disagreement"] == [2, 3, 5, 1, 0, 4]
assert EXPECTED["gap"] == [3, 2, 5, 4, 0, 1]


def _job(project: Project) -> Job:
    """A claimed scoring job: the writes are fenced by its claim."""
    job, _ = Job.objects.get_or_create(
        project=project,
        kind=Job.Kind.SCORE_COMPARISONS,
        status=Job.Status.RUNNING,
        worker="t",
        attempts=1,
    )
    return job


def _plant(project: Project, comparisons, strategy, seed: int = 1) -> list:
    Project.objects.filter(pk=project.pk).update(selection_strategy=strategy)
    pool = [
        Candidate(str(c.pk), d, v)
        for c, (d, v) in zip(comparisons, PLANTED, strict=True)
    ]
    selection_scores_write(_job(project), project, pool, seed=seed)
    return pool


def _served(project: Project, n: int) -> list[int]:
    """Comparison ids in the order one annotator is served them (each skipped)."""
    user = make_user(project=project)
    out = []
    for _ in range(n):
        a = comparison_next_for(annotator=user, project=project, now=T0)
        if a is None:
            break
        out.append(a.comparison_id)
        assignment_skip(assignment_id=a.pk, annotator=user)
    return out


@pytest.mark.django_db
@pytest.mark.parametrize("strategy", ["uncertainty", "disagreement", "gap"])
def test_each_strategy_serves_the_planted_pool_in_its_order(project, strategy):
    comparisons = make_comparisons(project, 6)
    _plant(project, comparisons, strategy)
    expected = [comparisons[i].pk for i in EXPECTED[strategy]]
    assert _served(project, 6) == expected


@pytest.mark.django_db
def test_random_serves_the_random_key_order_and_clears_old_scores(project):
    comparisons = make_comparisons(project, 6)
    _plant(project, comparisons, "gap")
    assert Comparison.objects.filter(selection_score__isnull=False).count() == 6
    _plant(project, comparisons, "random")  # today's behaviour: no scores
    assert not Comparison.objects.filter(selection_score__isnull=False).exists()
    by_key = sorted(comparisons, key=lambda c: c.random_key)
    assert _served(project, 6) == [c.pk for c in by_key]


@pytest.mark.django_db
def test_a_mix_serves_each_slot_from_one_strategys_ranking(project):
    comparisons = make_comparisons(project, 6)
    mix = {"uncertainty": 1.0, "disagreement": 1.0}
    pool = _plant(project, comparisons, mix, seed=5)
    served = _served(project, 6)
    index = {c.pk: i for i, c in enumerate(comparisons)}
    # The order order_pool draws with the job's seed ...
    assert [index[pk] for pk in served] == order_pool(pool, mix, rng=random.Random(5))
    # ... in which every slot is the best not yet served of one of the rankings.
    placed: set[int] = set()
    for pk in served:
        firsts = {next(i for i in EXPECTED[name] if i not in placed) for name in mix}
        assert index[pk] in firsts
        placed.add(index[pk])


@pytest.mark.django_db
def test_priority_then_started_then_score_then_unscored_at_random(project):
    comparisons = make_comparisons(project, 6)
    _plant(project, comparisons, "uncertainty")
    # Comparisons the job has not scored (new since it ran): after the scored.
    late_a, late_b = make_comparisons(project, 2, start=10)
    urgent, started = make_comparisons(project, 2, start=20)
    Comparison.objects.filter(pk=urgent.pk).update(priority=5)
    Comparison.objects.filter(pk=started.pk).update(labels_count=1)
    # Gold items are never scored: their own pass keeps its order.
    (gold,) = make_comparisons(project, 1, start=30, is_gold=True, gold_choice="a")
    assert Comparison.objects.get(pk=gold.pk).selection_score is None
    scored = [comparisons[i].pk for i in EXPECTED["uncertainty"]]
    unscored = [c.pk for c in sorted([late_a, late_b], key=lambda c: c.random_key)]
    served = _served(project, 11)
    assert served == [urgent.pk, started.pk, *scored, *unscored, gold.pk]


@pytest.mark.django_db
def test_a_superseded_scoring_job_writes_nothing(project):
    comparisons = make_comparisons(project, 3)
    Project.objects.filter(pk=project.pk).update(selection_strategy="uncertainty")
    job = _job(project)
    Job.objects.filter(pk=job.pk).update(worker="other", attempts=2)  # requeued
    from labelapp.jobs import Superseded

    pool = [Candidate(str(c.pk), 0.1 * i) for i, c in enumerate(comparisons)]
    with pytest.raises(Superseded):
        selection_scores_write(job, project, pool, seed=1)
    assert not Comparison.objects.filter(selection_score__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_concurrent_annotators_keep_the_guarantees_with_selection_on():
    """test_queue's concurrency check with selection on: planted scores, gold items
    mixed in, and a scoring writer rewriting every score (in a new order each time)
    while 16 annotators label to completion. Exact k, no duplicate labels, nothing
    lost, no extras."""
    n_annotators, n_regular, n_gold, k = 16, 40, 8, 3
    project = make_project(overlap=k, gold_rate=0.2, selection_strategy="gap")
    regular = make_comparisons(project, n_regular)
    make_comparisons(
        project, n_gold, start=1000, is_gold=True, gold_choice="a", labels_required=k
    )
    job = _job(project)
    rng0 = random.Random(0)

    def pool() -> list[Candidate]:
        return [
            Candidate(str(c.pk), rng0.uniform(-3, 3), rng0.uniform(0, 1))
            for c in regular
        ]

    selection_scores_write(job, project, pool(), seed=0)
    assert Comparison.objects.filter(selection_score__isnull=False).count() == n_regular
    users = [make_user(project=project) for _ in range(n_annotators)]
    errors: list[BaseException] = []
    submitted = Counter()
    gold_served = Counter()
    done = threading.Event()
    rewrites = [0]
    passed_over = [0]
    start = threading.Barrier(n_annotators + 1)

    def work(user) -> None:
        rng = random.Random(user.pk)
        try:
            start.wait()
            while True:
                a = comparison_next_for(annotator=user, project=project, rng=rng)
                if a is None:
                    if done.is_set():
                        return
                    # A row a score write holds is passed over for those
                    # milliseconds, as one being labelled is: ask again, as the
                    # page does, until the writer has stopped.
                    passed_over[0] += 1
                    time.sleep(0.005)
                    continue
                gold_served[a.comparison.is_gold] += 1
                choice = rng.choice(["a", "b", "tie", "both_bad"])
                for _ in range(2 if rng.random() < 0.2 else 1):  # double clicks
                    _, created = label_submit(
                        assignment_id=a.pk,
                        annotator=user,
                        choice=choice,
                        strength=rng.randint(1, 4),
                        idempotency_key=f"{a.pk}",
                    )
                    submitted[user.pk] += created
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def rescore() -> None:
        # Rewrites every score, in a new order each time, until every comparison
        # is complete (far more often than promotions would).
        try:
            start.wait()
            while Comparison.objects.filter(
                project=project, status=Comparison.Status.OPEN
            ).exists():
                selection_scores_write(job, project, pool(), seed=rewrites[0])
                rewrites[0] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    writer = threading.Thread(target=rescore)
    for t in [*threads, writer]:
        t.start()
    writer.join()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert rewrites[0] >= 1
    comparisons = Comparison.objects.filter(project=project)
    assert all(c.status == Comparison.Status.COMPLETE for c in comparisons)
    assert all(c.labels_count == k for c in comparisons)
    per_comparison = Counter(
        Label.objects.filter(comparison__project=project).values_list(
            "comparison_id", flat=True
        )
    )
    assert set(per_comparison.values()) == {k}
    assert len(per_comparison) == n_regular + n_gold
    assert sum(submitted.values()) == (n_regular + n_gold) * k
    pairs = Label.objects.values_list("comparison_id", "annotator_id")
    assert len(set(pairs)) == len(pairs)
    # Gold was mixed in while both kinds were left (all of it is labelled k times).
    assert gold_served[True] == n_gold * k
