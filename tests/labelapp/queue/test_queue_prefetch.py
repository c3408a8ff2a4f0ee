"""comparison_next_for's prefetch arguments (exclude_assignment_ids, max_leases), used
by the annotator page to hold the next pair while the current one is on screen."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from labelapp.models import Assignment
from labelapp.queue import comparison_next_for, label_submit
from tests.labelapp.conftest import make_comparisons, make_user


def test_default_still_one_lease_resumed(project, comparisons, annotator):
    first = comparison_next_for(annotator=annotator, project=project)
    again = comparison_next_for(annotator=annotator, project=project)
    assert again.pk == first.pk
    assert Assignment.objects.filter(annotator=annotator, state="leased").count() == 1


def test_prefetch_gets_a_different_comparison(project, comparisons, annotator):
    first = comparison_next_for(annotator=annotator, project=project)
    second = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[first.pk],
        max_leases=2,
    )
    assert second is not None
    assert second.pk != first.pk
    # overlap is 3, so the first comparison still had free slots: it must not be
    # leased to the same annotator a second time.
    assert second.comparison_id != first.comparison_id


def test_cap_on_held_leases(project, comparisons, annotator):
    first = comparison_next_for(annotator=annotator, project=project)
    second = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[first.pk],
        max_leases=2,
    )
    third = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[first.pk, second.pk],
        max_leases=2,
    )
    assert third is None
    # Without exclusions the oldest held lease comes back (page reload).
    assert comparison_next_for(annotator=annotator, project=project).pk == first.pk


def test_excluded_ids_of_finished_or_foreign_leases_are_harmless(project, annotator):
    make_comparisons(project, 3)
    other = make_user("other", project=project)
    theirs = comparison_next_for(annotator=other, project=project)
    first = comparison_next_for(annotator=annotator, project=project)
    label_submit(assignment_id=first.pk, annotator=annotator, choice="a", strength=1)
    nxt = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[first.pk, theirs.pk, 999_999],
        max_leases=2,
    )
    assert nxt is not None and nxt.comparison_id != first.comparison_id


def test_expired_held_lease_does_not_count(project, comparisons, annotator):
    now = timezone.now()
    first = comparison_next_for(annotator=annotator, project=project, now=now)
    later = now + timedelta(seconds=project.lease_seconds + 1)
    second = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[first.pk],
        max_leases=1,
        now=later,
    )
    # The first lease ran out, so the cap of one is free again.
    assert second is not None


def test_excluded_assignment_ids_never_hide_a_comparison_with_the_same_id(
    project, annotator
):
    """exclude_assignment_ids name assignments; a comparison whose id happens to
    equal one of them is still served (ids of different tables can coincide)."""
    (held_on,) = make_comparisons(project, 1)
    same_id = 10**9 + 7
    held = Assignment.objects.create(
        id=same_id,
        comparison=held_on,
        annotator=annotator,
        project=project,
        state=Assignment.State.LEASED,
        swapped=False,
        leased_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    (twin,) = make_comparisons(project, 1, start=1)
    type(twin).objects.filter(pk=twin.pk).update(id=same_id)

    prefetched = comparison_next_for(
        annotator=annotator,
        project=project,
        exclude_assignment_ids=[held.pk],
        max_leases=2,
    )
    assert prefetched is not None
    assert prefetched.comparison_id == same_id
