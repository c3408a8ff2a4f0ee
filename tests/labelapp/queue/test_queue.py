"""The annotation queue against real PostgreSQL: rules, leases, orientation, order,
gold mixing, idempotency and many concurrent annotators."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.models import Assignment, Comparison, Label
from labelapp.queue import (
    assignment_skip,
    canonical_choice,
    comparison_next_for,
    label_submit,
    leases_reclaim,
)
from labelapp.tasks import reclaim_expired_leases

from ..conftest import make_comparisons, make_project, make_user

T0 = timezone.now().replace(microsecond=0)


class SeqRng(random.Random):
    """random() returns the given values in turn (then 0.99): tests pick the draws."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.99


def test_next_leases_and_is_refresh_safe(project, comparisons, annotator):
    first = comparison_next_for(annotator=annotator, project=project, now=T0)
    assert first is not None and first.state == Assignment.State.LEASED
    assert first.expires_at == T0 + timedelta(seconds=600)
    again = comparison_next_for(
        annotator=annotator, project=project, now=T0 + timedelta(seconds=30)
    )
    assert again.pk == first.pk and again.swapped == first.swapped
    assert Assignment.objects.count() == 1


def test_never_more_leases_than_labels_needed(project):
    (only,) = make_comparisons(project, 1)  # k = 3
    users = [make_user(project=project) for _ in range(4)]
    got = [comparison_next_for(annotator=u, project=project, now=T0) for u in users]
    assert [a is not None for a in got] == [True, True, True, False]
    # One label in, one lease released by skip: still only one free slot at a time.
    label_submit(assignment_id=got[0].pk, annotator=users[0], choice="a", strength=2)
    assignment_skip(assignment_id=got[1].pk, annotator=users[1])
    fourth = comparison_next_for(annotator=users[3], project=project, now=T0)
    assert fourth is not None and fourth.comparison_id == only.pk
    # The skipper is never served it again.
    assert comparison_next_for(annotator=users[1], project=project, now=T0) is None


def test_labelled_or_skipped_never_served_again(project, annotator):
    make_comparisons(project, 2)
    a1 = comparison_next_for(annotator=annotator, project=project, now=T0)
    label_submit(assignment_id=a1.pk, annotator=annotator, choice="tie", strength=1)
    a2 = comparison_next_for(annotator=annotator, project=project, now=T0)
    assert a2.comparison_id != a1.comparison_id
    assignment_skip(assignment_id=a2.pk, annotator=annotator)
    assert comparison_next_for(annotator=annotator, project=project, now=T0) is None


def test_kth_label_completes_in_same_write(project, comparisons):
    target = comparisons[0]
    Comparison.objects.filter(pk=target.pk).update(priority=10, labels_required=2)
    users = [make_user(project=project) for _ in range(2)]
    for user, choice in zip(users, ["a", "a"], strict=True):
        assignment = comparison_next_for(
            annotator=user,
            project=project,
            now=T0,
            rng=SeqRng(0.9),  # not swapped
        )
        assert assignment.comparison_id == target.pk
        label_submit(
            assignment_id=assignment.pk,
            annotator=user,
            choice=choice,
            strength=3,
            now=T0,
        )
    target.refresh_from_db()
    assert target.status == Comparison.Status.COMPLETE
    assert target.labels_count == 2 and target.completed_at == T0
    assert target.agreement == 1.0


def test_lease_expiry_and_reclaim(project):
    (only,) = make_comparisons(project, 1, labels_required=1)
    alice, bob = make_user(project=project), make_user(project=project)
    lease = comparison_next_for(annotator=alice, project=project, now=T0)
    assert comparison_next_for(annotator=bob, project=project, now=T0) is None
    later = T0 + timedelta(seconds=601)
    # Lazy reclaim on next: bob takes the slot and alice's lease is closed.
    bob_lease = comparison_next_for(annotator=bob, project=project, now=later)
    assert bob_lease.comparison_id == only.pk
    lease.refresh_from_db()
    assert lease.state == Assignment.State.EXPIRED
    # Alice's late label: the slot is bob's now.
    with pytest.raises(Conflict, match="expired"):
        label_submit(
            assignment_id=lease.pk, annotator=alice, choice="a", strength=1, now=later
        )
    # Periodic reclaim (the Celery task calls the same function).
    much_later = later + timedelta(seconds=601)
    assert leases_reclaim(now=much_later) == 1
    assert leases_reclaim(now=much_later) == 0
    bob_lease.refresh_from_db()
    assert bob_lease.state == Assignment.State.EXPIRED
    # The expired annotator may be served the same comparison again.
    again = comparison_next_for(annotator=alice, project=project, now=much_later)
    assert again.pk == lease.pk and again.state == Assignment.State.LEASED


def test_late_label_accepted_when_slot_still_free(project):
    make_comparisons(project, 1, labels_required=1)
    alice = make_user(project=project)
    lease = comparison_next_for(annotator=alice, project=project, now=T0)
    late = T0 + timedelta(seconds=900)
    assert leases_reclaim(now=late) == 1
    label, created = label_submit(
        assignment_id=lease.pk, annotator=alice, choice="b", strength=4, now=late
    )
    assert created and label.comparison.status == Comparison.Status.COMPLETE


def test_celery_task_wrapper(project):
    make_comparisons(project, 1)
    user = make_user(project=project)
    lease = comparison_next_for(
        annotator=user, project=project, now=T0 - timedelta(hours=1)
    )
    assert reclaim_expired_leases.run() == 1
    lease.refresh_from_db()
    assert lease.state == Assignment.State.EXPIRED


def test_idempotent_resubmission(project, comparisons, annotator):
    lease = comparison_next_for(annotator=annotator, project=project, now=T0)
    kwargs = dict(
        assignment_id=lease.pk,
        annotator=annotator,
        choice="a",
        strength=2,
        idempotency_key="k-1",
    )
    label, created = label_submit(**kwargs)
    again, created_again = label_submit(**kwargs)
    assert created and not created_again and again.pk == label.pk
    # A retry without the key but with the same answer is also the same label.
    same, created3 = label_submit(
        assignment_id=lease.pk, annotator=annotator, choice="a", strength=2
    )
    assert same.pk == label.pk and not created3
    with pytest.raises(Conflict):
        label_submit(
            assignment_id=lease.pk, annotator=annotator, choice="b", strength=2
        )
    assert Label.objects.count() == 1
    comparison = Comparison.objects.get(pk=lease.comparison_id)
    assert comparison.labels_count == 1


def test_only_lease_holder_may_submit(project, comparisons, annotator):
    lease = comparison_next_for(annotator=annotator, project=project, now=T0)
    other = make_user(project=project)
    with pytest.raises(NotFound):
        label_submit(assignment_id=lease.pk, annotator=other, choice="a", strength=1)
    with pytest.raises(NotFound):
        assignment_skip(assignment_id=lease.pk, annotator=other)
    with pytest.raises(ValidationFailed):
        label_submit(
            assignment_id=lease.pk, annotator=annotator, choice="left", strength=1
        )
    with pytest.raises(ValidationFailed):
        label_submit(
            assignment_id=lease.pk, annotator=annotator, choice="a", strength=5
        )
    # The service's rules are the API's (labelapp.queue.label_input), all of them.
    with pytest.raises(ValidationFailed, match=r"idempotency_key: Ensure this field"):
        label_submit(
            assignment_id=lease.pk,
            annotator=annotator,
            choice="a",
            strength=1,
            idempotency_key="k" * 101,
        )
    with pytest.raises(ValidationFailed, match=r"strength: A valid integer"):
        label_submit(
            assignment_id=lease.pk, annotator=annotator, choice="a", strength=True
        )
    assert Label.objects.count() == 0


@pytest.mark.parametrize(
    ("swapped", "display", "stored", "p_a"),
    [
        (False, "a", "a", 1.0),
        (True, "a", "b", 0.0),
        (True, "b", "a", 1.0),
        (True, "tie", "tie", 0.5),
        (True, "both_bad", "both_bad", None),
    ],
)
def test_swapped_display_stored_canonically(
    project, comparisons, annotator, swapped, display, stored, p_a
):
    # The gold draw (unused: gold_rate 0), then the swap.
    rng = SeqRng(0.5, 0.1 if swapped else 0.9)
    lease = comparison_next_for(annotator=annotator, project=project, now=T0, rng=rng)
    assert lease.swapped is swapped
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=annotator, choice=display, strength=3
    )
    assert (label.choice, label.p_a, label.shown_swapped) == (stored, p_a, swapped)
    assert canonical_choice(display, swapped) == stored


def test_order_priority_then_started_then_random(project):
    low, high, started, random_first = make_comparisons(project, 4)
    Comparison.objects.filter(pk=low.pk).update(priority=0, random_key=0.0)
    Comparison.objects.filter(pk=high.pk).update(priority=5, random_key=0.9)
    Comparison.objects.filter(pk=started.pk).update(priority=1, random_key=0.8)
    Comparison.objects.filter(pk=random_first.pk).update(priority=1, random_key=0.1)
    seed_user = make_user(project=project)
    # Give `started` one label (served to seed_user by id; priority is temporary).
    Comparison.objects.filter(pk=started.pk).update(priority=99)
    lease = comparison_next_for(annotator=seed_user, project=project, now=T0)
    label_submit(assignment_id=lease.pk, annotator=seed_user, choice="a", strength=1)
    Comparison.objects.filter(pk=started.pk).update(priority=1)

    # Highest priority first, for every annotator (a skip frees the slot again).
    for _ in range(3):
        user = make_user(project=project)
        a = comparison_next_for(annotator=user, project=project, now=T0)
        assert a.comparison_id == high.pk
        assignment_skip(assignment_id=a.pk, annotator=user)
    # Among equal priority: the started one, then by random_key.
    Comparison.objects.filter(pk=high.pk).update(status=Comparison.Status.RETIRED)
    order = []
    user = make_user(project=project)
    for _ in range(3):
        a = comparison_next_for(annotator=user, project=project, now=T0)
        order.append(a.comparison_id)
        assignment_skip(assignment_id=a.pk, annotator=user)
    assert order == [started.pk, random_first.pk, low.pk]


def test_gold_mixed_in_by_rng(project):
    project.gold_rate = 0.2
    project.save()
    make_comparisons(project, 3)
    (gold,) = make_comparisons(project, 1, start=10, is_gold=True, gold_choice="a")
    Comparison.objects.filter(pk=gold.pk).update(priority=-5)  # last in normal order
    user = make_user(project=project)
    a = comparison_next_for(
        annotator=user, project=project, now=T0, rng=SeqRng(0.5, 0.5)
    )
    assert a.comparison_id != gold.pk  # draw 0.5 >= 0.2: regular item
    assignment_skip(assignment_id=a.pk, annotator=user)
    b = comparison_next_for(
        annotator=user, project=project, now=T0, rng=SeqRng(0.1, 0.5)
    )
    assert b.comparison_id == gold.pk  # draw 0.1 < 0.2: gold item despite priority


def test_gold_rate_statistically(project):
    project.gold_rate = 0.25
    project.save()
    make_comparisons(project, 40)
    make_comparisons(project, 40, start=100, is_gold=True, gold_choice="b")
    rng = random.Random(7)
    user = make_user(project=project)
    served = []
    for _ in range(60):
        a = comparison_next_for(annotator=user, project=project, now=T0, rng=rng)
        served.append(a.comparison.is_gold)
        assignment_skip(assignment_id=a.pk, annotator=user)
    rate = sum(served) / len(served)
    assert 0.1 <= rate <= 0.42, rate


def test_paused_and_non_member(project, comparisons):
    paused = make_user(project=project, paused=True)
    assert comparison_next_for(annotator=paused, project=project, now=T0) is None
    stranger = make_user()
    with pytest.raises(NotFound):
        comparison_next_for(annotator=stranger, project=project, now=T0)
    other_project = make_project()
    make_comparisons(other_project, 1)
    member_elsewhere = make_user(project=other_project)
    with pytest.raises(NotFound):
        comparison_next_for(annotator=member_elsewhere, project=project, now=T0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_many_concurrent_annotators_label_to_completion():
    n_annotators, n_comparisons, k = 32, 60, 3
    project = make_project(overlap=k)
    make_comparisons(project, n_comparisons)
    users = [make_user(project=project) for _ in range(n_annotators)]
    errors: list[BaseException] = []
    submitted = Counter()
    start = threading.Barrier(n_annotators)

    def work(user) -> None:
        rng = random.Random(user.pk)
        try:
            start.wait()
            while True:
                a = comparison_next_for(annotator=user, project=project, rng=rng)
                if a is None:
                    return
                # Every few items: a double submission, as from a double click.
                choice = rng.choice(["a", "b", "tie", "both_bad"])
                for _ in range(2 if rng.random() < 0.2 else 1):
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

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    comparisons = Comparison.objects.filter(project=project)
    assert all(c.status == Comparison.Status.COMPLETE for c in comparisons)
    assert all(c.labels_count == k for c in comparisons)
    per_comparison = Counter(
        Label.objects.filter(comparison__project=project).values_list(
            "comparison_id", flat=True
        )
    )
    assert set(per_comparison.values()) == {k}
    assert len(per_comparison) == n_comparisons
    assert sum(submitted.values()) == n_comparisons * k  # nothing lost, no extras
    pairs = Label.objects.values_list("comparison_id", "annotator_id")
    assert len(set(pairs)) == len(pairs)  # nobody labelled a comparison twice


def test_label_and_its_assignment_share_the_injected_clock(project, comparisons):
    """The label's created_at is the ``now`` the caller passed, as are the
    assignment's finished_at and the comparison's completed_at: one clock per write
    (a test or a replay at another time sees the times it asked for)."""
    Comparison.objects.filter(pk=comparisons[0].pk).update(
        priority=10, labels_required=1
    )
    user = make_user(project=project)
    then = T0 - timedelta(days=3)
    lease = comparison_next_for(annotator=user, project=project, now=then)
    label, created = label_submit(
        assignment_id=lease.pk, annotator=user, choice="a", strength=2, now=then
    )
    assert created and label.created_at == then
    stored = Label.objects.select_related("assignment", "comparison").get(pk=label.pk)
    assert stored.created_at == then
    assert stored.assignment.finished_at == then
    assert stored.comparison.completed_at == then
