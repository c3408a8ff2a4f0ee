"""The review page after a decision: the redirect lands on the next pending label
(the one the page named as ``next``, else the queue's first), and the reviewer's own
labels are marked so review.js skips them."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from labelapp.models import Label
from labelapp.queue import comparison_next_for, label_submit
from tests.frontend.conftest import client_for
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    project = make_project(overlap=3)
    make_comparisons(project, 2)
    reviewer = make_user(project=project, role="reviewer")
    users = [make_user(project=project), make_user(project=project), reviewer]
    for user in users:
        for _ in range(2):
            lease = comparison_next_for(annotator=user, project=project)
            label_submit(assignment_id=lease.pk, annotator=user, choice="a", strength=1)
    return project, reviewer


def _rows(client, project):
    page = client.get(reverse("frontend:review", args=[project.pk])).content.decode()
    return re.findall(
        r'id="label-(\d+)" tabindex="0" data-label-id="\d+"( data-own)?', page
    )


def test_own_labels_are_marked(world):
    project, reviewer = world
    rows = _rows(client_for(reviewer), project)
    own = {int(pk) for pk, flag in rows if flag}
    assert own == set(
        Label.objects.filter(annotator=reviewer).values_list("pk", flat=True)
    )
    staff = client_for(make_user(staff=True))  # staff may judge anyone's
    assert not any(flag for _pk, flag in _rows(staff, project))


def test_decision_goes_to_the_named_next_label_or_the_first_pending(world):
    project, reviewer = world
    client = client_for(reviewer)
    order = [int(pk) for pk, flag in _rows(client, project) if not flag]
    first, named = order[0], order[2]
    url = reverse("frontend:review-label", args=[project.pk, first])
    resp = client.post(url, {"state": "accepted", "next": str(named), "page": "1"})
    assert resp["Location"].endswith(f"page=1#label-{named}")
    # A named label that is no longer pending (or junk): the first pending one.
    url = reverse("frontend:review-label", args=[project.pk, order[1]])
    resp = client.post(url, {"state": "rejected", "next": str(first)})
    target = int(resp["Location"].rsplit("#label-", 1)[1])
    assert target == named  # order[0] and order[1] are reviewed now
    resp = client.post(url, {"state": "rejected", "next": "1" * 40})
    assert resp.status_code == 302
    # Nothing left pending: back to the decided label.
    Label.objects.exclude(annotator=reviewer).update(review_state="accepted")
    resp = client.post(url, {"state": "accepted"})
    assert resp["Location"].endswith(f"#label-{order[1]}")
