"""200 annotators at once over HTTP (issue 14's guard): docker-compose's web process
(collectstatic, then gunicorn with DEBUG=0 and compose's workers and threads) against
the real PostgreSQL, each annotator a thread with its own token and keep-alive
connection, leasing and labelling until nothing is left. The invariants are checked
in the database: exactly k labels per comparison, nobody labels a comparison twice,
nothing lost, no extras, and not one 5xx.

The queue's own concurrency test (tests/labelapp/queue/test_queue.py) calls the
service in threads; this one goes through everything in front of it: gunicorn's
gthread workers, the middleware, token authentication and its throttle, DRF."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from rest_framework.authtoken.models import Token

from labelapp.models import Assignment, Comparison, Label
from tests.e2e.conftest import Processes
from tests.labelapp.api.live import PROXY_HEADERS, compose_web, start_production_web
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ANNOTATORS, COMPARISONS, K = 200, 100, 3


def _compose(flag: str) -> int:
    command = compose_web()["command"]
    return int(command[command.index(flag) + 1])


@pytest.fixture
def web(transactional_db, tmp_path, settings) -> Iterator[str]:
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    procs = Processes(tmp_path)
    try:
        yield start_production_web(
            procs,
            tmp_path,
            workers=_compose("--workers"),
            threads=_compose("--threads"),
        )
    finally:
        procs.stop_all()


def test_200_annotators_over_http_label_exactly_k(web: str) -> None:
    project = make_project(overlap=K)
    make_comparisons(project, COMPARISONS)
    users = [make_user(project=project) for _ in range(ANNOTATORS)]
    tokens = {u.pk: Token.objects.create(user=u).key for u in users}

    statuses: Counter[int] = Counter()
    created_by: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(ANNOTATORS)

    def annotate(user_id: int) -> None:
        rng = random.Random(user_id)
        headers = {**PROXY_HEADERS, "Authorization": f"Token {tokens[user_id]}"}
        seen: list[int] = []
        try:
            # Generous against a loaded machine: 200 clients share 16 server threads.
            with httpx.Client(base_url=web, headers=headers, timeout=120) as client:
                start.wait()
                while True:
                    lease = client.post(f"/api/v1/projects/{project.pk}/next/")
                    with lock:
                        statuses[lease.status_code] += 1
                    if lease.status_code == 204:
                        return
                    if lease.status_code != 200:
                        raise AssertionError(f"next: {lease.status_code} {lease.text}")
                    assignment = lease.json()["assignment_id"]
                    seen.append(assignment)
                    body = {
                        "choice": rng.choice(["a", "b", "tie", "both_bad"]),
                        "strength": rng.randint(1, 4),
                        "idempotency_key": f"{user_id}-{assignment}",
                    }
                    # Now and then the same label twice, as from a client retry.
                    for _ in range(2 if rng.random() < 0.2 else 1):
                        done = client.post(
                            f"/api/v1/assignments/{assignment}/label/", json=body
                        )
                        with lock:
                            statuses[done.status_code] += 1
                            created_by[user_id] += done.status_code == 201
                        if done.status_code not in (200, 201):
                            raise AssertionError(
                                f"label: {done.status_code} {done.text}"
                            )
        except BaseException as exc:
            with lock:
                failures.append(f"annotator {user_id}: {exc!r}")

    threads = [threading.Thread(target=annotate, args=(u.pk,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not [code for code in statuses if code >= 500], statuses
    assert not failures, failures[:5]
    assert set(statuses) <= {200, 201, 204}, statuses
    assert statuses[204] == ANNOTATORS  # each one asked until nothing was left

    labels = Label.objects.filter(comparison__project=project)
    assert labels.count() == COMPARISONS * K
    assert sum(created_by.values()) == COMPARISONS * K  # nothing lost, no extras
    per_comparison = Counter(labels.values_list("comparison_id", flat=True))
    assert len(per_comparison) == COMPARISONS
    assert set(per_comparison.values()) == {K}
    pairs = list(labels.values_list("comparison_id", "annotator_id"))
    assert len(set(pairs)) == len(pairs)  # nobody labelled a comparison twice
    comparisons = Comparison.objects.filter(project=project)
    assert set(comparisons.values_list("status", "labels_count")) == {
        (Comparison.Status.COMPLETE, K)
    }
    assert not Assignment.objects.filter(
        comparison__project=project, state=Assignment.State.LEASED
    ).exists()
    assert (
        Assignment.objects.filter(
            comparison__project=project, state=Assignment.State.LABELLED
        ).count()
        == COMPARISONS * K
    )
