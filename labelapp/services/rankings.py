"""Ranking items and rankings (the writes).

A ranking is stored once per (item, annotator) as its tiers of response ids, and
aggregated at once into the pairwise preferences it implies
(:func:`training.rankings.implied_pairs`): each implied pair is a ``Comparison``
(origin ``ranking`` unless the pair already exists, e.g. from pairwise
labelling) holding one ``Label`` per ranking that implies it (source
``ranking``, ``p_a`` 1, 0 or ½). The comparison's soft label is then the mean over
its labels, the same aggregate as for pairwise labels, so the preference export,
the reward-model training data and the review page consume rankings unchanged.

A resubmitted ranking replaces its implied labels in the same transaction. A pair
its annotator already labelled pairwise keeps that label (one label per
annotator and comparison): the ranking does not overwrite a direct judgement.

Annotators rank through :func:`ranking_rank` (the API), whose ``tiers`` are indexes
into the order they were shown (``labelapp.selectors.rankings``); a new ranking
consumes the annotator's lease (``labelapp.queue.rankings``: leases keep the
overlap exactly k), and is then stored with :func:`ranking_submit`, as the
importer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from labelapp.errors import Conflict, NotFound, ValidationFailed
from labelapp.models import (
    Choice,
    Comparison,
    Label,
    Project,
    Ranking,
    RankingItem,
    Response,
)
from labelapp.queue.rankings import ranking_lease_consume, ranking_slot_check
from labelapp.selectors.rankings import ITEM_NOT_FOUND, ranking_display_order
from labelapp.services.aggregates import comparison_aggregate_refresh
from training.rankings import (
    MAX_RESPONSES,
    MIN_RESPONSES,
    RankingError,
    check_tiers,
    implied_pairs,
)


def responses_key(response_ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in sorted(response_ids))


def ranking_item_create(
    *,
    project: Project,
    prompt_id: int,
    response_ids: Sequence[int],
    labels_required: int | None = None,
) -> RankingItem:
    """The ranking item of these responses of one prompt (created once; the same
    set of responses, in any order, is the same item)."""
    ids = list(response_ids)
    if not MIN_RESPONSES <= len(ids) <= MAX_RESPONSES:
        raise ValidationFailed(
            f"response_ids: a ranking item has {MIN_RESPONSES}..{MAX_RESPONSES} "
            f"responses, got {len(ids)}"
        )
    if len(set(ids)) != len(ids):
        raise ValidationFailed(f"response_ids: {ids} repeats a response")
    found = set(
        Response.objects.filter(id__in=ids, prompt_id=prompt_id).values_list(
            "id", flat=True
        )
    )
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationFailed(
            f"response_ids: {missing} are not responses of prompt {prompt_id}"
        )
    item, _ = RankingItem.objects.get_or_create(
        project=project,
        responses_key=responses_key(ids),
        defaults={
            "prompt_id": prompt_id,
            "response_ids": ids,
            "labels_required": labels_required or project.overlap,
        },
    )
    return item


def check_ranking(*, item: RankingItem, tiers: object) -> list[list[int]]:
    """The tiers of a ranking of ``item``, or ``ValidationFailed`` naming the
    problem (field ``tiers``)."""
    try:
        return check_tiers(tiers, list(item.response_ids))
    except RankingError as exc:
        raise ValidationFailed(f"tiers: {exc}") from None


def display_tiers_problem(tiers: object, k: int) -> str | None:
    """What is wrong with ``tiers`` as a ranking of k shown responses: a list of
    1..k tiers, best first, each a non-empty list of response indexes 0..k-1 (a
    tier of several is a tie), no index twice; indexes left out are unranked (a
    top-k ranking). None when it is fine."""
    if not isinstance(tiers, list):
        return f"expected a list of tiers, got {_kind(tiers)}"
    for i, tier in enumerate(tiers):
        if not isinstance(tier, list):
            return (
                f"tier {i} must be a list of response indexes (e.g. [{i}]), "
                f"got {_kind(tier)} {tier!r}"
            )
        for member in tier:
            # bool is an int in Python, and 1.0 == 1: neither is an index.
            if type(member) is not int:
                return (
                    f"tier {i} holds {member!r} ({_kind(member)}), which is not a "
                    f"response index (an integer 0..{k - 1})"
                )
    try:
        check_tiers(tiers, list(range(k)))
    except RankingError as exc:
        return str(exc)
    return None


def _kind(value: object) -> str:
    names = {dict: "an object", str: "a string", bool: "a boolean", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def check_display_tiers(tiers: object, k: int) -> list[list[int]]:
    """``tiers`` (display indexes) as checked, or ``ValidationFailed`` naming the
    bad tier or value (field ``tiers``)."""
    if problem := display_tiers_problem(tiers, k):
        raise ValidationFailed(f"tiers: {problem}")
    return tiers  # type: ignore[return-value]


def ranking_rank(
    *,
    item_id: int,
    annotator,
    tiers: object,
    duration_ms: int | None = None,
    now: datetime | None = None,
) -> tuple[Ranking, bool]:
    """``annotator``'s ranking of the item, ``tiers`` in their display order;
    returns (ranking, created). A second ranking by the same annotator replaces
    the first (created False) while it is unreviewed (Conflict once reviewed, as
    a reviewed pairwise label cannot be edited). A new ranking consumes the
    annotator's lease (``labelapp.queue.rankings.ranking_slot_check``), or a slot
    nobody holds; Conflict when the item has no slot left for them. NotFound when
    there is no such item. The caller checked that the annotator may rank in the
    item's project.

    Race: the k-th slot. The item row is locked (SELECT ... FOR UPDATE) before the
    lease and the counts are read, so two annotators ranking the last free slot
    are serialised: the second re-reads the counts after the first's commit and
    gets the 409. With leases (``next``) that cannot happen to annotators who
    asked for the item: ``next`` never leases more slots than are left."""
    with transaction.atomic():
        item = RankingItem.objects.select_for_update().filter(pk=item_id).first()
        if item is None:
            raise NotFound(ITEM_NOT_FOUND)
        checked = check_display_tiers(tiers, len(item.response_ids))
        own = Ranking.objects.filter(item=item, annotator=annotator).first()
        if own is None:
            ranking_slot_check(item=item, annotator=annotator, now=now)
        elif own.review_state != Label.ReviewState.PENDING:
            raise Conflict(
                f"Your ranking of item {item.pk} has been reviewed ({own.review_state})"
                "; it can no longer be changed."
            )
        order = ranking_display_order(item=item, annotator_id=annotator.pk)
        ranking = ranking_submit(
            item=item,
            annotator=annotator,
            tiers=[[order[i] for i in tier] for tier in checked],
            duration_ms=duration_ms,
            now=now,
        )
    return ranking, own is None


def ranking_submit(
    *,
    item: RankingItem,
    annotator,
    tiers: object,
    source: str = Label.Source.HUMAN,
    duration_ms: int | None = None,
    now: datetime | None = None,
) -> Ranking:
    """Store ``annotator``'s ranking of ``item`` (replacing an earlier one) and
    rewrite the pairwise labels it implies; one transaction, item row locked. A
    new ranking ends the annotator's lease on the item, if they hold one."""
    checked = check_ranking(item=item, tiers=tiers)
    with transaction.atomic():
        # The item lock serialises two submissions of one annotator (and keeps
        # labels_count exact when several annotators submit at once).
        item = RankingItem.objects.select_for_update().get(pk=item.pk)
        ranking, created = Ranking.objects.update_or_create(
            item=item,
            annotator=annotator,
            defaults={
                "tiers": checked,
                "source": source,
                "duration_ms": duration_ms,
                # Imported rankings' labels are stored accepted (below); so is the
                # ranking.
                "review_state": (
                    Label.ReviewState.ACCEPTED
                    if source == Label.Source.IMPORTED
                    else Label.ReviewState.PENDING
                ),
            },
        )
        touched = set(
            Label.objects.filter(ranking=ranking).values_list(
                "comparison_id", flat=True
            )
        )
        Label.objects.filter(ranking=ranking).delete()
        touched |= _write_implied_labels(item, ranking, checked, source)
        _refresh_comparisons(touched)
        if created:
            ranking_lease_consume(item_id=item.pk, annotator_id=annotator.pk, now=now)
            item.labels_count += 1
            if item.labels_count >= item.labels_required:
                item.status = RankingItem.Status.COMPLETE
            item.save(update_fields=["labels_count", "status"])
    return ranking


def _choice(p_a: float) -> str:
    return Choice.A if p_a > 0.5 else Choice.B if p_a < 0.5 else Choice.TIE


def _write_implied_labels(
    item: RankingItem, ranking: Ranking, tiers: list[list[int]], source: str
) -> set[int]:
    pairs = implied_pairs(tiers, list(item.response_ids))
    if not pairs:
        return set()
    Comparison.objects.bulk_create(
        [
            Comparison(
                project_id=item.project_id,
                prompt_id=item.prompt_id,
                response_a_id=a,
                response_b_id=b,
                origin=Comparison.Origin.RANKING,
                labels_required=1,
                status=Comparison.Status.COMPLETE,
            )
            for a, b in pairs
        ],
        ignore_conflicts=True,
    )
    ids = {
        (a, b): cid
        for a, b, cid in Comparison.objects.filter(
            response_a_id__in={a for a, _ in pairs},
            response_b_id__in={b for _, b in pairs},
        ).values_list("response_a_id", "response_b_id", "id")
        if (a, b) in pairs
    }
    imported = source == Label.Source.IMPORTED
    Label.objects.bulk_create(
        [
            Label(
                comparison_id=ids[pair],
                annotator_id=ranking.annotator_id,
                ranking=ranking,
                choice=_choice(p_a),
                p_a=p_a,
                source=Label.Source.RANKING,
                duration_ms=None,
                review_state=(
                    Label.ReviewState.ACCEPTED
                    if imported
                    else Label.ReviewState.PENDING
                ),
            )
            for pair, p_a in pairs.items()
        ],
        # An existing label of this annotator on the pair (a pairwise judgement)
        # stands; see the module docstring.
        ignore_conflicts=True,
    )
    return set(ids.values())


def _refresh_comparisons(comparison_ids: set[int]) -> None:
    """Recompute the aggregates of the touched comparisons. A ranking-made
    comparison is complete while some ranking implies it (its k is the number of
    such labels) and retired when none does any more; a pairwise comparison keeps
    its own queue counts."""
    now = timezone.now()
    for comparison in (
        Comparison.objects.select_for_update()
        .filter(id__in=comparison_ids)
        .order_by("id")
    ):
        extra: list[str] = []
        if comparison.origin == Comparison.Origin.RANKING:
            n = Label.objects.filter(comparison_id=comparison.pk).count()
            comparison.labels_count = n
            comparison.labels_required = max(1, n)
            if n:
                comparison.status = Comparison.Status.COMPLETE
                comparison.completed_at = comparison.completed_at or now
            else:
                comparison.status = Comparison.Status.RETIRED
            extra = ["labels_count", "labels_required", "status", "completed_at"]
        comparison_aggregate_refresh(comparison, also_save=extra)
