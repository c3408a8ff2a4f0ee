"""Statement budgets of the annotation hot path, and the race guards its hand-written
SQL adds.

The budgets count every statement a request sends, as the server sees them: token
auth, BEGIN/COMMIT (SAVEPOINT/RELEASE inside a test transaction), the queue's own.
Raising one is a performance regression unless the new statement closes a race; see
the statement list at the top of labelapp/queue/ (its package docstring) and docs/benchmarks.md."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labelapp.models import Assignment, Label
from labelapp.queue import comparison_next_for, label_submit, leases_reclaim

from ..conftest import make_comparisons, make_user

pytestmark = pytest.mark.django_db

# One call of labelapp_queue_next (lock membership, close lapsed leases, held leases,
# candidate, lease + payload run inside it), in autocommit: no BEGIN/COMMIT.
NEXT_MAX_QUERIES = 1
# The same call, resuming the held lease.
NEXT_RESUME_MAX_QUERIES = 1
# BEGIN, lock comparison, assignment + labels, one write statement, COMMIT
LABEL_MAX_QUERIES = 5
# BEGIN, lock comparison, conditional UPDATE, COMMIT
SKIP_MAX_QUERIES = 4
# ... plus the token lookup, when the token's row is not cached in this process
# (labelapp.api.authentication: at most once per API_TOKEN_CACHE_SECONDS).
TOKEN_LOOKUP = 1


@pytest.mark.parametrize("cached", [True, False], ids=["token-cached", "token-lookup"])
def test_next_and_label_statement_budget(
    project, api_client_for, django_assert_max_num_queries, settings, cached
):
    settings.API_TOKEN_CACHE_SECONDS = 3600 if cached else 0
    auth = 0 if cached else TOKEN_LOOKUP
    make_comparisons(project, 3)
    client = api_client_for(make_user(project=project))
    url = f"/api/v1/projects/{project.pk}/next/"
    client.post(url)  # warm: content types, URL resolver caches
    with django_assert_max_num_queries(NEXT_RESUME_MAX_QUERIES + auth):
        resumed = client.post(url)
    assignment_id = resumed.json()["assignment_id"]
    label_url = f"/api/v1/assignments/{assignment_id}/label/"
    with django_assert_max_num_queries(LABEL_MAX_QUERIES + auth):
        labelled = client.post(label_url, {"choice": "b", "strength": 2}, format="json")
    assert labelled.status_code == 201, labelled.content

    with django_assert_max_num_queries(NEXT_MAX_QUERIES + auth):
        fresh = client.post(url)
    assert fresh.status_code == 200 and fresh.json()["assignment_id"] != assignment_id
    skip_url = f"/api/v1/assignments/{fresh.json()['assignment_id']}/skip/"
    with django_assert_max_num_queries(SKIP_MAX_QUERIES + auth):
        skipped = client.post(skip_url)
    assert skipped.json()["state"] == "skipped"


def test_label_keeps_aggregates_exact(project):
    """The label write computes the aggregates from the labels read under the lock
    plus the new one; they must equal a full recompute."""
    (only,) = make_comparisons(project, 1)
    for choice, strength in (("a", 4), ("both_bad", 1), ("a", 2)):
        user = make_user(project=project)
        lease = comparison_next_for(annotator=user, project=project)
        label_submit(
            assignment_id=lease.pk, annotator=user, choice=choice, strength=strength
        )
    only.refresh_from_db()
    stored = sorted(
        Label.objects.filter(comparison=only).values_list("choice", flat=True)
    )
    assert only.labels_count == 3 and only.status == "complete"
    assert only.completed_at is not None
    # Display choices map to stored ones through the (random) orientation; the
    # aggregates follow the stored ones.
    p_values = [{"a": 1.0, "b": 0.0}[c] for c in stored if c != "both_bad"]
    assert only.p_a == pytest.approx(sum(p_values) / len(p_values))
    assert only.both_bad_count == 1
    assert only.mean_strength == pytest.approx(3.0)  # (4 + 2) / 2: not both_bad's 1


def _stale_candidate(comparison_id: int) -> None:
    """Replace the candidate query (labelapp_queue_candidate) with one that offers
    ``comparison_id`` as a stale snapshot would, whatever its state (until it was
    tried once). DDL is transactional: the test's rollback restores the real one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION labelapp_queue_candidate(p_project bigint,"
            " p_user integer, p_now timestamptz, p_gold boolean, p_exclude bigint[])"
            " RETURNS bigint LANGUAGE sql AS $$ SELECT CASE WHEN NOT"
            f" ({int(comparison_id)} = ANY(p_exclude)) THEN {int(comparison_id)}::bigint"
            " END $$"
        )
        # The queue calls it by name: this is what it will be offered.
        cursor.execute(
            "SELECT labelapp_queue_candidate(0, 0, now(), false, '{}'::bigint[])"
        )
        assert cursor.fetchone()[0] == comparison_id


def test_stale_candidate_never_re_leases_a_labelled_assignment(project):
    """Race: the candidate query's snapshot predates a late label (the annotator's
    expired lease, labelled while the slot was still free). The lease statement's
    ON CONFLICT ... WHERE state = 'expired' must not turn it back into a lease."""
    (only,) = make_comparisons(project, 1)
    alice = make_user(project=project)
    t0 = timezone.now()
    lease = comparison_next_for(annotator=alice, project=project, now=t0)
    late = t0 + timedelta(seconds=project.lease_seconds + 1)
    assert leases_reclaim(now=late) == 1
    label_submit(
        assignment_id=lease.pk, annotator=alice, choice="a", strength=1, now=late
    )

    # The stale snapshot: the candidate query still offers the comparison.
    _stale_candidate(only.pk)
    assert comparison_next_for(annotator=alice, project=project, now=late) is None
    lease.refresh_from_db()
    assert lease.state == Assignment.State.LABELLED
    assert Label.objects.filter(assignment=lease).count() == 1


def test_stale_candidate_never_over_leases(project):
    """Race: the candidate query saw a free slot that a lease committed since has
    taken; the lease statement's recount (fresh snapshot) refuses it."""
    (only,) = make_comparisons(project, 1, labels_required=1)
    alice, bob = make_user(project=project), make_user(project=project)
    assert comparison_next_for(annotator=alice, project=project) is not None

    _stale_candidate(only.pk)
    assert comparison_next_for(annotator=bob, project=project) is None
    assert Assignment.objects.filter(comparison=only).count() == 1


def test_hot_path_statements_run_on_generic_plans_from_the_start(project):
    """The connection asks for generic plans (config.env), so the queue's prepared
    statements are never re-planned per execution, whatever their first runs saw."""
    make_comparisons(project, 4)
    users = [make_user(project=project) for _ in range(3)]
    for user in users:  # prepare_threshold 2: the third run is prepared
        comparison_next_for(annotator=user, project=project)
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            ["%labelapp_queue_next(%"],
        )
        plans = cursor.fetchall()
    assert plans, "the next call was not prepared"
    assert all(generic >= 1 and custom == 0 for generic, custom in plans), plans
