"""Undo and edit of one's own label (labelapp.queue.undo), and skip reasons: the
grace period, the review and source rules, exact counts and aggregates, and undo
racing labels and reviews from many threads."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labelapp.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Assignment, Comparison, Label
from labelapp.queue import (
    assignment_skip,
    comparison_next_for,
    label_edit,
    label_submit,
    label_undo,
)
from labelapp.services.reviews import label_review
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


def _label(user, project, choice="a", strength=3, now=None):
    """``user`` labels their next pair, shown unswapped (display = canonical)."""
    lease = comparison_next_for(annotator=user, project=project, now=now)
    Assignment.objects.filter(pk=lease.pk).update(swapped=False)
    label, _ = label_submit(
        assignment_id=lease.pk,
        annotator=user,
        choice=choice,
        strength=strength,
        now=now,
    )
    return lease, label


def test_undo_of_the_completing_label_reopens_and_leases_it_back():
    project = make_project(overlap=2, lease_seconds=120, undo_grace_seconds=60)
    (comparison,) = make_comparisons(project, 1)
    first, second = make_user(project=project), make_user(project=project)
    _label(first, project, "a", 4)
    lease, label = _label(second, project, "b", 2)
    comparison.refresh_from_db()
    assert comparison.status == "complete" and comparison.labels_count == 2
    assert comparison.p_a == 0.5

    now = timezone.now()
    assignment = label_undo(label_id=label.pk, annotator=second, now=now)

    comparison.refresh_from_db()
    assert not Label.objects.filter(pk=label.pk).exists()
    assert comparison.status == "open" and comparison.completed_at is None
    assert comparison.labels_count == 1 == comparison.labels.count()
    assert comparison.p_a == 1.0 and comparison.majority == "a"  # first's label only
    assert assignment.pk == lease.pk
    stored = Assignment.objects.get(pk=lease.pk)
    assert stored.state == "leased" and stored.finished_at is None
    assert stored.expires_at == now + timedelta(seconds=120)
    # The slot passed from the label to the lease: a third annotator gets nothing...
    third = make_user(project=project)
    assert comparison_next_for(annotator=third, project=project) is None
    # ...and the undoer is served the same pair again and can answer anew.
    again = comparison_next_for(annotator=second, project=project)
    assert again.pk == lease.pk
    _relabel, created = label_submit(
        assignment_id=again.pk, annotator=second, choice="a", strength=1
    )
    assert created
    comparison.refresh_from_db()
    assert comparison.status == "complete" and comparison.labels_count == 2
    assert comparison.p_a == 1.0


def test_undo_and_edit_are_refused_after_the_grace_period_and_with_it_off():
    project = make_project(overlap=1, undo_grace_seconds=30)
    make_comparisons(project, 2)
    user = make_user(project=project)
    given = timezone.now()
    _, label = _label(user, project, now=given)
    late = given + timedelta(seconds=30)
    with pytest.raises(Conflict, match="30 s"):
        label_undo(label_id=label.pk, annotator=user, now=late)
    with pytest.raises(Conflict, match="30 s"):
        label_edit(label_id=label.pk, annotator=user, choice="b", strength=1, now=late)
    assert Label.objects.get(pk=label.pk).choice == label.choice  # nothing changed

    project.undo_grace_seconds = 0
    project.save()
    with pytest.raises(Conflict, match="does not allow"):
        label_undo(label_id=label.pk, annotator=user, now=given)


def test_only_the_annotator_may_undo_and_never_a_reviewed_label():
    project = make_project(overlap=1)
    make_comparisons(project, 1)
    user = make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    staff = make_user(staff=True)
    _, label = _label(user, project)
    for other in (reviewer, staff):
        with pytest.raises(PermissionDenied):
            label_undo(label_id=label.pk, annotator=other)
        with pytest.raises(PermissionDenied):
            label_edit(label_id=label.pk, annotator=other, choice="tie")
    with pytest.raises(NotFound):
        label_undo(label_id=label.pk + 999, annotator=user)

    label_review(label=label, reviewer=reviewer, state="accepted")
    with pytest.raises(Conflict, match="accepted"):
        label_undo(label_id=label.pk, annotator=user)
    with pytest.raises(Conflict, match="accepted"):
        label_edit(label_id=label.pk, annotator=user, choice="tie")
    assert Label.objects.filter(pk=label.pk, choice="a").exists()


def test_imported_labels_cannot_be_undone():
    project = make_project(overlap=1)
    (comparison,) = make_comparisons(project, 1)
    user = make_user(project=project)
    label = Label.objects.create(
        comparison=comparison, annotator=user, choice="a", p_a=1.0, source="imported"
    )
    with pytest.raises(Conflict, match="imported"):
        label_undo(label_id=label.pk, annotator=user)


def test_edit_maps_display_terms_through_the_swap_and_refreshes_aggregates():
    project = make_project(overlap=3)
    (comparison,) = make_comparisons(project, 1)
    user = make_user(project=project)
    lease = comparison_next_for(annotator=user, project=project, rng=random.Random(0))
    Assignment.objects.filter(pk=lease.pk).update(swapped=True)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=user, choice="a", strength=2
    )
    assert label.choice == "b"  # shown swapped: the left-hand one is response_b
    comparison.refresh_from_db()
    assert comparison.p_a == 0.0

    edited = label_edit(
        label_id=label.pk, annotator=user, choice="b", strength=4, rationale="why"
    )
    stored = Label.objects.get(pk=label.pk)
    assert stored.choice == "a" and stored.displayed_choice == "b"
    assert stored.strength == 4 and stored.rationale == "why" and stored.p_a == 1.0
    assert stored.edited_at is not None and edited.edited_at == stored.edited_at
    comparison.refresh_from_db()
    assert comparison.p_a == 1.0 and comparison.majority == "a"
    assert comparison.mean_strength == 4
    assert comparison.labels_count == 1  # an edit is not a new label

    with pytest.raises(ValidationFailed, match="strength"):
        label_edit(label_id=label.pk, annotator=user, choice="a")  # a needs one
    stored.refresh_from_db()
    assert stored.choice == "a"
    tie = label_edit(label_id=label.pk, annotator=user, choice="tie", strength=3)
    assert tie.strength is None and tie.p_a == 0.5


def test_undo_is_refused_once_a_reviewer_wrote_a_note():
    project = make_project(overlap=1)
    make_comparisons(project, 1)
    user = make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    _, label = _label(user, project)
    label.notes.create(author=reviewer, body="Are you sure?")
    with pytest.raises(Conflict, match="note"):
        label_undo(label_id=label.pk, annotator=user)
    # Editing it is still open (the reviewer asked a question, not judged).
    assert label_edit(label_id=label.pk, annotator=user, choice="b", strength=1)


def test_skip_keeps_its_reason_and_refuses_an_overlong_one():
    project = make_project(overlap=1)
    make_comparisons(project, 2)
    user = make_user(project=project)
    lease = comparison_next_for(annotator=user, project=project)
    with pytest.raises(ValidationFailed, match="200"):
        assignment_skip(assignment_id=lease.pk, annotator=user, reason="x" * 201)
    assert Assignment.objects.get(pk=lease.pk).state == "leased"
    assignment_skip(assignment_id=lease.pk, annotator=user, reason="  Prompt unclear ")
    stored = Assignment.objects.get(pk=lease.pk)
    assert stored.state == "skipped" and stored.skip_reason == "Prompt unclear"
    # A lease made after the new column still gets its database default.
    other = comparison_next_for(annotator=user, project=project)
    assert Assignment.objects.get(pk=other.pk).skip_reason == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_undo_under_concurrency_keeps_counts_exact():
    """Annotators label, undo about a third of their labels and relabel, while a
    reviewer accepts labels as they appear: every comparison ends complete with
    exactly k labels, its count equal to its stored labels, no one labelling a
    comparison twice, and each accepted label still there."""
    n_annotators, n_comparisons, k = 12, 30, 3
    project = make_project(overlap=k, undo_grace_seconds=600)
    make_comparisons(project, n_comparisons)
    users = [make_user(project=project) for _ in range(n_annotators)]
    reviewer = make_user(project=project, role="reviewer")
    errors: list[BaseException] = []
    undone = Counter()
    refused = Counter()
    accepted: set[int] = set()
    done = threading.Event()
    start = threading.Barrier(n_annotators + 1)

    def annotate(user) -> None:
        rng = random.Random(user.pk)
        try:
            start.wait()
            while True:
                a = comparison_next_for(annotator=user, project=project, rng=rng)
                if a is None:
                    return
                label, _ = label_submit(
                    assignment_id=a.pk,
                    annotator=user,
                    choice=rng.choice(["a", "b", "tie"]),
                    strength=rng.randint(1, 4),
                )
                if rng.random() < 0.35:
                    try:
                        back = label_undo(label_id=label.pk, annotator=user)
                    except Conflict:
                        refused[user.pk] += 1  # the reviewer accepted it first
                    else:
                        assert back.pk == a.pk
                        undone[user.pk] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def review() -> None:
        try:
            start.wait()
            while not done.is_set():
                for label in Label.objects.filter(
                    comparison__project=project, review_state="pending"
                ).order_by("?")[:3]:
                    try:
                        label_review(label=label, reviewer=reviewer, state="accepted")
                        accepted.add(label.pk)
                    except NotFound:
                        pass  # undone meanwhile
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=annotate, args=(u,)) for u in users]
    reviewer_thread = threading.Thread(target=review)
    for t in [*threads, reviewer_thread]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reviewer_thread.join()
    assert not errors, errors[:3]
    assert sum(undone.values()) > 10  # the race was exercised
    # An annotator's next skips comparisons locked at that instant (SKIP LOCKED: a
    # review or an undo holding the row), so a thread may have stopped on a None
    # that was only momentary; annotators ask again, as the compare page does.
    for user in users:
        while a := comparison_next_for(annotator=user, project=project):
            label_submit(assignment_id=a.pk, annotator=user, choice="a", strength=1)

    comparisons = list(Comparison.objects.filter(project=project))
    per_comparison = Counter(
        Label.objects.filter(comparison__project=project).values_list(
            "comparison_id", flat=True
        )
    )
    for c in comparisons:
        assert c.status == "complete", c
        assert c.labels_count == k == per_comparison[c.pk], c
    pairs = list(Label.objects.values_list("comparison_id", "annotator_id"))
    assert len(set(pairs)) == len(pairs)
    assert accepted <= set(Label.objects.values_list("pk", flat=True))
    assert not Assignment.objects.filter(project=project, state="leased").exists()
