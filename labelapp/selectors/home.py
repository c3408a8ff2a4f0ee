"""Reads for the annotator's home and compare pages: daily label counts and the
notices of new round pairs. Each is one grouped query over all of the user's
projects, so the home page costs the same with one project or twenty."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from labelapp.models import Assignment, Label, Membership, Ranking, Round

DAILY_DAYS = 14
NOTICE_ROUNDS_MAX = 3


def daily_label_counts(
    *,
    user: AbstractBaseUser,
    project_ids: list[int],
    days: int = DAILY_DAYS,
    now: datetime | None = None,
) -> dict[int, list[tuple[date, int]]]:
    """Per project id: ``days`` (UTC day, count) pairs, oldest first, ending today,
    of the user's finished work: pairwise labels (labelled assignments, the count
    the home page's "Done today" shows) plus rankings (one per ranked item)."""
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    counts: dict[tuple[int, date], int] = {}
    labelled = (
        Assignment.objects.filter(
            annotator=user,
            project_id__in=project_ids,
            state=Assignment.State.LABELLED,
            finished_at__gte=start,
        )
        .annotate(day=TruncDate("finished_at", tzinfo=UTC))
        .values("project_id", "day")
        .annotate(n=Count("pk"))
    )
    ranked = (
        Ranking.objects.filter(
            annotator=user,
            item__project_id__in=project_ids,
            created_at__gte=start,
            source=Label.Source.HUMAN,
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("item__project_id", "day")
        .annotate(n=Count("pk"))
    )
    for r in labelled:
        key = (r["project_id"], r["day"])
        counts[key] = counts.get(key, 0) + r["n"]
    for r in ranked:
        key = (r["item__project_id"], r["day"])
        counts[key] = counts.get(key, 0) + r["n"]
    span = [first + timedelta(days=i) for i in range(days)]
    return {pid: [(d, counts.get((pid, d), 0)) for d in span] for pid in project_ids}


@dataclass(frozen=True)
class RoundNotice:
    number: int
    pairs: int
    finished_at: datetime


def round_notices(
    *, user: AbstractBaseUser, project_ids: list[int] | None = None
) -> dict[int, list[RoundNotice]]:
    """Per project id the user is a member of: the finished rounds that added
    pairs to its queue since the user last saw the notices
    (``Membership.rounds_seen_at``; never seen: every such round), newest first,
    at most NOTICE_ROUNDS_MAX. One query."""
    if not user.is_authenticated:
        return {}
    members = Membership.objects.filter(user=user)
    if project_ids is not None:
        members = members.filter(project_id__in=project_ids)
    seen = Membership.objects.filter(
        user=user, project_id=OuterRef("project_id")
    ).values("rounds_seen_at")[:1]
    rounds = (
        Round.objects.filter(
            status=Round.Status.DONE, project_id__in=members.values("project_id")
        )
        .annotate(seen=Subquery(seen))
        .filter(Q(seen__isnull=True) | Q(finished_at__gt=F("seen")))
        .annotate(pairs=Count("comparisons"))
        .filter(pairs__gt=0)
        .values("project_id", "number", "pairs", "finished_at")
        .order_by("project_id", "-finished_at", "-number")
    )
    out: dict[int, list[RoundNotice]] = {}
    for r in rounds:
        notices = out.setdefault(r["project_id"], [])
        if len(notices) < NOTICE_ROUNDS_MAX:
            notices.append(RoundNotice(r["number"], r["pairs"], r["finished_at"]))
    return out
