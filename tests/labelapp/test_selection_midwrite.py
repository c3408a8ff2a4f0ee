"""Issue 17: a selection strategy changed while the score_comparisons job writes is
written again in the new strategy's order (labelapp.loop.selection)."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection, connections, transaction

from labelapp.loop.selection import WRITE_CHUNK, selection_scores_write
from labelapp.models import Comparison, Job, Project
from tests.labelapp.conftest import make_comparisons, make_project
from training.selection import Candidate, queue_scores


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_strategy_changed_mid_write_is_written_in_the_new_order():
    project = make_project(selection_strategy="uncertainty")
    made = make_comparisons(project, WRITE_CHUNK + 50)
    rng = random.Random(3)
    candidates = [
        Candidate(str(c.pk), rng.uniform(-3, 3), rng.uniform(0, 2)) for c in made
    ]
    before = queue_scores(candidates, "uncertainty", rng=random.Random(1))
    after = queue_scores(candidates, "gap", rng=random.Random(1))
    assert before != after  # the two orders differ, so the test can tell them apart
    job = Job.objects.create(
        project=project, kind=Job.Kind.SCORE_COMPARISONS, status="running",
        worker="t", attempts=1,
    )  # fmt: skip
    held = made[WRITE_CHUNK + 10]  # in the second chunk
    locked, release = threading.Event(), threading.Event()
    result: dict = {}

    def hold_a_row() -> None:  # a label's transaction on one row of chunk 2
        try:
            with transaction.atomic():
                Comparison.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(60)
        finally:
            connections.close_all()

    def write() -> None:
        try:
            result.update(selection_scores_write(job, project, candidates, seed=1))
        except BaseException as exc:  # surfaced by the assertion below
            result["error"] = exc
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_a_row)
    holder.start()
    assert locked.wait(30)
    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    while not _waiting_on_a_lock():  # the writer waits for the held row
        assert time.monotonic() < deadline and writer.is_alive(), result
        time.sleep(0.05)
    # Chunk 1 is written in the old order; the strategy changes now.
    first = Comparison.objects.get(pk=made[0].pk).selection_score
    assert first == pytest.approx(before[0])
    Project.objects.filter(pk=project.pk).update(selection_strategy="gap")
    release.set()
    holder.join(30)
    writer.join(60)
    assert "error" not in result, result
    assert result == {"strategy": "gap", "comparisons": len(made)}
    stored = dict(
        Comparison.objects.filter(project=project).values_list("pk", "selection_score")
    )
    assert [stored[c.pk] for c in made] == pytest.approx(after)
