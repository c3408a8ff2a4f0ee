"""services.annotators: pausing the annotators their gold accuracy flags."""

from __future__ import annotations

import pytest

from labelapp.models import Membership
from labelapp.services.annotators import annotators_flag_and_pause
from tests.labelapp.conftest_review import review_gold_project

pytestmark = pytest.mark.django_db


def test_flagging_only_reports_unless_the_project_pauses() -> None:
    project, _good, bad, _few = review_gold_project()
    assert annotators_flag_and_pause(project=project) == []
    assert not Membership.objects.get(project=project, user=bad).paused


def test_pauses_flagged_members_once() -> None:
    project, good, bad, _few = review_gold_project(pause_flagged_annotators=True)
    assert annotators_flag_and_pause(project=project) == [bad.pk]
    m = Membership.objects.get(project=project, user=bad)
    assert m.paused and "25%" in m.paused_reason
    assert not Membership.objects.get(project=project, user=good).paused
    # Idempotent: an already paused member is left as it is.
    assert annotators_flag_and_pause(project=project) == []
