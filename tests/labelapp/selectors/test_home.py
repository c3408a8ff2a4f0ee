"""daily_label_counts and round_notices: the home page's reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from labelapp.models import Assignment, Comparison, Membership, Round
from labelapp.queue import comparison_next_for, label_submit
from labelapp.selectors.home import NOTICE_ROUNDS_MAX, daily_label_counts, round_notices
from labelapp.services.notes import round_notices_mark_seen
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _label(project, user, finished_at):
    lease = comparison_next_for(annotator=user, project=project)
    label_submit(assignment_id=lease.pk, annotator=user, choice="a", strength=1)
    Assignment.objects.filter(pk=lease.pk).update(finished_at=finished_at)


def test_daily_counts_per_project_and_utc_day():
    project, other = make_project(), make_project()
    make_comparisons(project, 5)
    make_comparisons(other, 2)
    user = make_user(project=project)
    Membership.objects.create(project=other, user=user)
    colleague = make_user(project=project)
    _label(project, user, NOW - timedelta(hours=1))
    _label(project, user, NOW.replace(hour=0, minute=0, second=1))
    _label(project, user, NOW - timedelta(days=2))
    _label(project, user, NOW - timedelta(days=20))  # outside the window
    _label(other, user, NOW - timedelta(days=1))
    _label(project, colleague, NOW)  # not theirs
    counts = daily_label_counts(
        user=user, project_ids=[project.pk, other.pk], days=7, now=NOW
    )
    days = [d for d, _ in counts[project.pk]]
    assert days[0] == date(2026, 12, 1) and days[-1] == date(2026, 12, 7)
    assert len(days) == 7
    assert dict(counts[project.pk]) == {
        **{d: 0 for d in days},
        date(2026, 12, 7): 2,
        date(2026, 12, 5): 1,
    }
    assert sum(n for _, n in counts[other.pk]) == 1
    assert dict(counts[other.pk])[date(2026, 12, 6)] == 1


def _round(project, number, pairs, finished_at, status=Round.Status.DONE):
    rnd = Round.objects.create(
        project=project,
        number=number,
        policy_ref="p",
        status=status,
        finished_at=finished_at,
    )
    if pairs:
        for c in make_comparisons(project, pairs, start=number * 100):
            Comparison.objects.filter(pk=c.pk).update(round=rnd, origin="round")
    return rnd


def test_round_notices_since_last_seen():
    project, other = make_project(), make_project()
    user = make_user(project=project)
    outsider = make_user(project=other)
    t0 = timezone.now() - timedelta(hours=3)
    _round(project, 1, 2, t0)
    _round(project, 2, 0, t0 + timedelta(minutes=1))  # added nothing
    _round(project, 3, 3, None, status=Round.Status.RUNNING)
    _round(other, 1, 1, t0)
    notices = round_notices(user=user)
    assert [(n.number, n.pairs) for n in notices[project.pk]] == [(1, 2)]
    assert other.pk not in notices
    assert project.pk not in round_notices(user=outsider)

    round_notices_mark_seen(user=user, project=project)
    assert round_notices(user=user) == {}
    _round(project, 4, 4, timezone.now() + timedelta(seconds=1))
    assert [(n.number, n.pairs) for n in round_notices(user=user)[project.pk]] == [
        (4, 4)
    ]
    # Another member's seen mark is theirs alone.
    colleague = make_user(project=project)
    assert len(round_notices(user=colleague)[project.pk]) == 2


def test_round_notices_are_capped_newest_first():
    project = make_project()
    user = make_user(project=project)
    t0 = timezone.now() - timedelta(hours=1)
    for n in range(1, NOTICE_ROUNDS_MAX + 3):
        _round(project, n, 1, t0 + timedelta(minutes=n))
    numbers = [n.number for n in round_notices(user=user)[project.pk]]
    assert numbers == list(range(NOTICE_ROUNDS_MAX + 2, 2, -1))
