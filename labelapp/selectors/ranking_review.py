"""Reads for the ranking review page: which rankings a reviewer looks at, one
ranking laid out as its annotator ordered it, and the next pending one.

A ranking is reviewed as a whole (labelapp.services.reviews.ranking_review); the
queue lists them oldest first, pending ones by default, as the API's
``rankings/?review_state=pending`` does (``rankings_for`` decides who may see
them; the page decorator asks ``access.can_review``, the same rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from labelapp.models import Label, Project, Ranking, RankingItem
from labelapp.selectors.rankings import ranking_display_order

STATE_ALL = "all"
STATES: tuple[str, ...] = (*Label.ReviewState.values, STATE_ALL)


@dataclass(frozen=True)
class RankingReviewFilters:
    annotator: int | None = None
    state: str = Label.ReviewState.PENDING

    @classmethod
    def from_query(cls, query: Any) -> RankingReviewFilters:
        """Parse GET (or a form's hidden) params; malformed values are ignored, so
        a hand-edited URL still shows a queue. No ``review_state``: pending ones
        (the API's parameter name; ``state`` is the review form's decision)."""
        raw = query.get("annotator", "")
        state = query.get("review_state") or Label.ReviewState.PENDING
        return cls(
            annotator=int(raw) if raw.isdigit() and len(raw) < 19 else None,
            state=state if state in STATES else Label.ReviewState.PENDING,
        )

    def as_query(self) -> dict[str, str]:
        out = {}
        if self.annotator is not None:
            out["annotator"] = str(self.annotator)
        if self.state != Label.ReviewState.PENDING:
            out["review_state"] = self.state
        return out


def ranking_review_queue(
    *, project: Project, filters: RankingReviewFilters
) -> QuerySet[Ranking]:
    """``project``'s rankings matching ``filters``, oldest (lowest id) first."""
    qs = Ranking.objects.filter(item__project=project).select_related(
        "annotator", "reviewed_by", "item", "item__prompt"
    )
    if filters.annotator is not None:
        qs = qs.filter(annotator_id=filters.annotator)
    if filters.state != STATE_ALL:
        qs = qs.filter(review_state=filters.state)
    return qs.order_by("pk")


def ranking_review_counts(*, project: Project) -> dict[str, int]:
    """How many rankings the project has, and how many await review."""
    qs = Ranking.objects.filter(item__project=project)
    return {
        "total": qs.count(),
        "pending": qs.filter(review_state=Label.ReviewState.PENDING).count(),
    }


def ranking_review_annotators(*, project: Project) -> list[tuple[int, str]]:
    """The filter's options: annotators who ranked in ``project``."""
    return list(
        Ranking.objects.filter(item__project=project)
        .values_list("annotator_id", "annotator__username")
        .distinct()
        .order_by("annotator__username")
    )


def ranking_next_pending(
    *,
    project: Project,
    filters: RankingReviewFilters,
    after: Ranking,
    exclude_annotator: int | None = None,
) -> Ranking | None:
    """The pending ranking to show after ``after`` was decided: the next one in
    the queue's order (within the annotator filter), else the first one still
    pending before it; never one of ``exclude_annotator`` (a reviewer's own
    rankings are not theirs to judge). None when nothing is left pending."""
    pending = RankingReviewFilters(annotator=filters.annotator)
    qs = ranking_review_queue(project=project, filters=pending).exclude(pk=after.pk)
    if exclude_annotator is not None:
        qs = qs.exclude(annotator_id=exclude_annotator)
    return qs.filter(pk__gt=after.pk).first() or qs.first()


def _tier_rows(
    tiers: list[list[int]], responses: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {
            "place": place,
            "tie": len(tier) > 1,
            "responses": [responses[rid] for rid in tier if rid in responses],
        }
        for place, tier in enumerate(tiers, start=1)
    ]


def ranking_review_detail(*, ranking: Ranking) -> dict[str, Any]:
    """One ranking as its annotator ordered it: the prompt's messages, the tiers
    best first (a tier of several is a tie), the responses left unranked, each
    response with its raw text (the page renders and sanitises it) and the
    position it was shown to the annotator in (1-based, as their digit keys); the
    item's gold order when it is gold, and how many labels the ranking implies."""
    item: RankingItem = ranking.item
    order = ranking_display_order(item=item, annotator_id=ranking.annotator_id)
    texts = dict(item.prompt.responses.filter(id__in=order).values_list("id", "text"))
    responses = {
        rid: {"id": rid, "shown_as": i, "text": texts.get(rid, "")}
        for i, rid in enumerate(order, start=1)
    }
    ranked = {rid for tier in ranking.tiers for rid in tier}
    return {
        "ranking": ranking,
        "item": item,
        "prompt_messages": [
            m for m in (item.prompt.messages or []) if isinstance(m, dict)
        ],
        "tiers": _tier_rows(ranking.tiers, responses),
        "unranked": [responses[rid] for rid in order if rid not in ranked],
        "gold_tiers": (
            _tier_rows(item.gold_tiers, responses)
            if item.is_gold and item.gold_tiers
            else None
        ),
        "is_gold_order": bool(item.is_gold and item.gold_tiers == ranking.tiers),
        "implied_labels": Label.objects.filter(ranking=ranking).count(),
    }
