"""Reads for ranking mode: one item as an annotator is shown it, and the display
order its tiers are written in. (The next item to rank is a lease, a write:
``labelapp.queue.rankings``.)

An annotator is shown an item's responses in an order of their own (a shuffle
seeded by item and annotator, so position bias averages out over annotators and a
reload shows the same order); the API's ``tiers`` are indexes into that order. No
other annotator's ranking, no counts, no scores: annotators rank blind.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from labelapp import access
from labelapp.errors import NotFound
from labelapp.models import Ranking, RankingAssignment, RankingItem

ITEM_NOT_FOUND = "Ranking item not found."


def ranking_display_order(*, item: RankingItem, annotator_id: int) -> list[int]:
    """The item's response ids in the order ``annotator_id`` is shown them."""
    order = list(item.response_ids)
    random.Random(f"ranking-order:{item.pk}:{annotator_id}").shuffle(order)
    return order


def tiers_to_display(tiers: Sequence[Sequence[int]], order: Sequence[int]) -> list:
    """Stored tiers (response ids) as indexes into a display ``order``."""
    position = {rid: i for i, rid in enumerate(order)}
    return [[position[rid] for rid in tier] for tier in tiers]


def ranking_item_for(*, user: AbstractBaseUser, item_id: int) -> RankingItem:
    """The item if ``user`` may see its project (members and staff), else
    NotFound (so ids cannot be probed)."""
    item = RankingItem.objects.select_related("prompt").filter(pk=item_id).first()
    if item is None or not access.can_view(user=user, project=item.project_id):
        raise NotFound(ITEM_NOT_FOUND)
    return item


def ranking_item_payload(
    *, item: RankingItem, user: AbstractBaseUser, now: datetime | None = None
) -> dict:
    """What ``user`` is shown: the prompt and the responses in their display order,
    each with its ``index`` (what ``tiers`` refer to), their own ranking of it
    (in display indexes) or None, and when their live lease on it ends (None
    without one)."""
    order = ranking_display_order(item=item, annotator_id=user.pk)
    texts = dict(item.prompt.responses.filter(id__in=order).values_list("id", "text"))
    own = (
        Ranking.objects.filter(item=item, annotator_id=user.pk)
        .values_list("tiers", flat=True)
        .first()
    )
    return {
        "id": item.pk,
        "project": item.project_id,
        "prompt": {"messages": item.prompt.messages},
        "responses": [
            {"index": i, "response_id": rid, "text": texts[rid]}
            for i, rid in enumerate(order)
        ],
        "your_tiers": None if own is None else tiers_to_display(own, order),
        "lease_expires_at": (
            RankingAssignment.objects.filter(
                item=item,
                annotator_id=user.pk,
                state=RankingAssignment.State.LEASED,
                expires_at__gt=now or timezone.now(),
            )
            .values_list("expires_at", flat=True)
            .first()
        ),
    }


def rankings_for(user: AbstractBaseUser) -> QuerySet[Ranking]:
    """The rankings ``user`` may review: every ranking of the projects they
    review (``access.REVIEW_ROLES``; staff: all). Annotators see none, not even
    their own (they read their ranking on the item, ``your_tiers``)."""
    ids = access.project_ids_with_role(user=user, roles=access.REVIEW_ROLES)
    qs = Ranking.objects.select_related("item").order_by("id")
    return qs if ids is None else qs.filter(item__project_id__in=ids)
