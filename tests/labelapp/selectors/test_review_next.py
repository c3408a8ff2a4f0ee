"""review_next_pending: where the review page goes after a decision."""

from __future__ import annotations

import pytest

from labelapp.models import Label
from labelapp.queue import comparison_next_for, label_submit
from labelapp.selectors.review import ReviewFilters, review_next_pending, review_queue
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue():
    project = make_project(overlap=2)
    make_comparisons(project, 3)
    annotators = [make_user(project=project) for _ in range(2)]
    for user in annotators:
        for _ in range(3):
            lease = comparison_next_for(annotator=user, project=project)
            label_submit(assignment_id=lease.pk, annotator=user, choice="a", strength=1)
    order = [
        lb.pk
        for c in review_queue(project=project, filters=ReviewFilters())
        for lb in c.labels.all()
    ]
    return project, annotators, order


def test_prefers_the_label_the_page_named_and_finds_its_page(queue):
    project, _annotators, order = queue
    target = review_next_pending(
        project=project, filters=ReviewFilters(), page_size=20, prefer=order[3]
    )
    assert target.label_id == order[3] and target.page == 1
    # One comparison per page: the 4th label (2 per comparison) is on page 2.
    target = review_next_pending(
        project=project, filters=ReviewFilters(), page_size=1, prefer=order[3]
    )
    assert target.page == 2


def test_falls_back_to_the_first_pending_label(queue):
    project, annotators, order = queue
    Label.objects.filter(pk__in=order[:2]).update(review_state="accepted")
    # The preferred one was reviewed meanwhile: the queue's first pending label.
    target = review_next_pending(
        project=project, filters=ReviewFilters(), page_size=20, prefer=order[0]
    )
    first_pending = next(
        pk
        for c in review_queue(project=project, filters=ReviewFilters())
        for pk in c.labels.filter(review_state="pending")
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )
    assert target.label_id == first_pending
    # Never a label the reviewer may not judge, never outside the filters.
    mine = annotators[0].pk
    target = review_next_pending(
        project=project, filters=ReviewFilters(), page_size=20, exclude_annotator=mine
    )
    assert Label.objects.get(pk=target.label_id).annotator_id != mine
    only = ReviewFilters(annotator=mine)
    target = review_next_pending(project=project, filters=only, page_size=20)
    assert Label.objects.get(pk=target.label_id).annotator_id == mine
    Label.objects.update(review_state="rejected")
    assert (
        review_next_pending(project=project, filters=ReviewFilters(), page_size=20)
        is None
    )
