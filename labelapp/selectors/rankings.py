"""Reads for ranking mode: the next ranking item an annotator should rank, one item
as that annotator is shown it, and the display order its tiers are written in.

An annotator is shown an item's responses in an order of their own (a shuffle
seeded by item and annotator, so position bias averages out over annotators and a
reload shows the same order); the API's ``tiers`` are indexes into that order. No
other annotator's ranking, no counts, no scores: annotators rank blind.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F

from labelapp import access
from labelapp.errors import NotFound
from labelapp.models import Ranking, RankingItem

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


def ranking_item_next_for(
    *, annotator: AbstractBaseUser, project_id: int
) -> RankingItem | None:
    """The next item of the project ``annotator`` has not ranked and that still
    needs rankings (fewer than its k); None when there is none or the membership is
    paused. NotFound for non-members (staff who are not members included: they get
    no queue) and unknown projects.

    Items with the most rankings come first, so started items complete before new
    ones are begun (the pairwise queue's rule too). There is no lease: two
    annotators may be served the same last slot, and the second to submit gets the
    service's 409 and asks again."""
    paused = access.annotation_paused(user=annotator, project=project_id)
    if paused is None:
        raise NotFound("Project not found.")
    if paused:
        return None
    return (
        RankingItem.objects.filter(
            project_id=project_id,
            status=RankingItem.Status.OPEN,
            labels_count__lt=F("labels_required"),
        )
        .exclude(rankings__annotator=annotator)
        .select_related("prompt")
        .order_by("-labels_count", "id")
        .first()
    )


def ranking_item_for(*, user: AbstractBaseUser, item_id: int) -> RankingItem:
    """The item if ``user`` may see its project (members and staff), else
    NotFound (so ids cannot be probed)."""
    item = RankingItem.objects.select_related("prompt").filter(pk=item_id).first()
    if item is None or not access.can_view(user=user, project=item.project_id):
        raise NotFound(ITEM_NOT_FOUND)
    return item


def ranking_item_payload(*, item: RankingItem, user: AbstractBaseUser) -> dict:
    """What ``user`` is shown: the prompt and the responses in their display order,
    each with its ``index`` (what ``tiers`` refer to), and their own ranking of it
    (in display indexes) or None."""
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
    }
