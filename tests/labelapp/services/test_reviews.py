"""services.reviews: label review re-aggregates its comparison; who may review."""

from __future__ import annotations

import pytest

from labelapp.errors import PermissionDenied, ValidationFailed
from labelapp.models import Comparison, Label
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.reviews import label_review
from tests.labelapp.conftest import make_comparisons, make_user

pytestmark = pytest.mark.django_db


def _label_all(project, choices):
    users = [make_user(project=project) for _ in choices]
    labels = []
    for user, choice in zip(users, choices, strict=True):
        a = comparison_next_for(
            annotator=user, project=project, rng=_NoSwap()
        )  # display == canonical
        labels.append(
            label_submit(assignment_id=a.pk, annotator=user, choice=choice, strength=2)[
                0
            ]
        )
    return labels


class _NoSwap:
    def random(self) -> float:
        return 0.99


def test_refreshed_on_label_and_review(project):
    (comparison,) = make_comparisons(project, 1)
    labels = _label_all(project, ["a", "b", "a"])
    comparison.refresh_from_db()
    assert comparison.p_a == pytest.approx(2 / 3)
    assert comparison.majority == "a" and comparison.agreement == pytest.approx(2 / 3)
    reviewer = make_user(project=project, role="reviewer")
    label_review(label=labels[0], reviewer=reviewer, state="rejected", note="spam")
    comparison.refresh_from_db()
    # One a and one b left: p_a 0.5, no unique majority. Count and status unchanged.
    assert comparison.p_a == pytest.approx(0.5) and comparison.majority == ""
    assert comparison.labels_count == 3
    assert comparison.status == Comparison.Status.COMPLETE
    label_review(label=labels[0], reviewer=reviewer, state="accepted")
    comparison.refresh_from_db()
    assert comparison.p_a == pytest.approx(2 / 3)
    stored = Label.objects.get(pk=labels[0].pk)
    assert stored.reviewed_by == reviewer and stored.review_state == "accepted"


def test_review_rules(project):
    make_comparisons(project, 1)
    (label,) = _label_all(project, ["tie"])
    annotator = make_user(project=project)
    with pytest.raises(PermissionDenied):
        label_review(label=label, reviewer=annotator, state="accepted")
    reviewer = make_user(project=project, role="reviewer")
    with pytest.raises(ValidationFailed):
        label_review(label=label, reviewer=reviewer, state="pending")


def test_staff_review_any_project_and_their_own_labels(project):
    # One rule with the review page (labelapp.access): Django staff review every
    # project, member or not; the superuser-only rule refused is_staff alone.
    make_comparisons(project, 1)
    (label,) = _label_all(project, ["a"])
    staff = make_user(staff=True, superuser=False)
    reviewed = label_review(label=label, reviewer=staff, state="rejected")
    assert reviewed.review_state == "rejected" and reviewed.reviewed_by == staff
    other = make_user()  # neither staff nor member
    with pytest.raises(PermissionDenied, match="Only reviewers"):
        label_review(label=label, reviewer=other, state="accepted")


def test_reviewers_cannot_review_their_own_label(project):
    make_comparisons(project, 1)
    reviewer = make_user(project=project, role="reviewer")
    lease = comparison_next_for(annotator=reviewer, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=reviewer, choice="b", strength=1
    )
    with pytest.raises(PermissionDenied, match="your own label"):
        label_review(label=label, reviewer=reviewer, state="accepted")
