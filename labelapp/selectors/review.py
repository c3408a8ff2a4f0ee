"""Reads for the review queue: which comparisons a reviewer should look at first.

Disagreement first: comparisons where a label misses the gold answer, then by
ascending agreement (share of labels equal to the plurality), then the ones with
more labels. Only comparisons with at least one label are listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet

from labelapp.models import Comparison, Label, Project
from labelapp.selectors.quality import gold_accuracy_for_project


@dataclass(frozen=True)
class ReviewFilters:
    annotator: int | None = None
    round: int | None = None
    origin: str | None = None
    pending_only: bool = False

    @classmethod
    def from_query(cls, query: Any) -> ReviewFilters:
        """Parse GET params; malformed values are ignored rather than errors, so a
        hand-edited URL still shows a queue."""

        def as_int(name: str) -> int | None:
            raw = query.get(name, "")
            return int(raw) if raw.isdigit() else None

        origin = query.get("origin") or None
        if origin not in Comparison.Origin.values:
            origin = None
        return cls(
            annotator=as_int("annotator"),
            round=as_int("round"),
            origin=origin,
            pending_only=query.get("pending") == "1",
        )

    def as_query(self) -> dict[str, str]:
        out = {}
        if self.annotator is not None:
            out["annotator"] = str(self.annotator)
        if self.round is not None:
            out["round"] = str(self.round)
        if self.origin:
            out["origin"] = self.origin
        if self.pending_only:
            out["pending"] = "1"
        return out


def review_queue(*, project: Project, filters: ReviewFilters) -> QuerySet[Comparison]:
    """Labelled comparisons of ``project``, disagreement first, with their labels
    (annotator loaded) prefetched in a stable order. Comparisons made by rankings
    are left out, and a label a ranking implies does not make a comparison
    pending: those are reviewed with their ranking, as a whole
    (selectors.ranking_review)."""
    gold_miss = Label.objects.filter(
        comparison=OuterRef("pk"), comparison__is_gold=True
    ).exclude(choice=OuterRef("gold_choice"))
    pending = Label.objects.filter(
        comparison=OuterRef("pk"),
        review_state=Label.ReviewState.PENDING,
        ranking__isnull=True,
    )
    qs = (
        Comparison.objects.filter(project=project, labels_count__gte=1)
        .exclude(origin=Comparison.Origin.RANKING)
        .annotate(
            gold_miss=Exists(gold_miss),
            has_pending=Exists(pending),
            n_rejected=Count(
                "labels", filter=Q(labels__review_state=Label.ReviewState.REJECTED)
            ),
        )
        .select_related("prompt", "response_a", "response_b", "round")
        .prefetch_related(
            Prefetch(
                "labels",
                queryset=Label.objects.select_related(
                    "annotator", "reviewed_by"
                ).order_by("created_at", "pk"),
            )
        )
    )
    if filters.annotator is not None:
        qs = qs.filter(
            Exists(
                Label.objects.filter(
                    comparison=OuterRef("pk"), annotator_id=filters.annotator
                )
            )
        )
    if filters.round is not None:
        qs = qs.filter(round__number=filters.round)
    if filters.origin:
        qs = qs.filter(origin=filters.origin)
    if filters.pending_only:
        qs = qs.filter(has_pending=True)
    return qs.order_by(
        F("gold_miss").desc(),
        F("agreement").asc(nulls_last=True),
        F("labels_count").desc(),
        "pk",
    )


def review_filter_choices(project: Project) -> dict[str, list[tuple[Any, str]]]:
    """Options for the filter form: annotators who labelled, round numbers, origins."""
    annotators = (
        Label.objects.filter(comparison__project=project)
        .values_list("annotator_id", "annotator__username")
        .distinct()
        .order_by("annotator__username")
    )
    rounds = (
        project.rounds.order_by("number").values_list("number", flat=True).distinct()
    )
    return {
        "annotators": list(annotators),
        "rounds": [(n, f"Round {n}") for n in rounds],
        "origins": list(Comparison.Origin.choices),
    }


def bulk_accept_labels(
    *,
    project: Project,
    filters: ReviewFilters,
    min_gold_accuracy: float | None = None,
    exclude_annotator: int | None = None,
) -> QuerySet[Label]:
    """The pending labels a bulk accept with these filters takes: those of the
    comparisons the review queue lists for ``filters`` (only the filtered
    annotator's own labels when one is chosen), of annotators whose gold accuracy
    is at least ``min_gold_accuracy`` when given (an annotator with no gold label
    yet has no accuracy and is left out), never ``exclude_annotator``'s."""
    comparisons = review_queue(project=project, filters=filters).order_by()
    labels = Label.objects.filter(
        comparison__in=comparisons.values("pk"),
        review_state=Label.ReviewState.PENDING,
        ranking__isnull=True,  # reviewed with their ranking
    )
    if filters.annotator is not None:
        labels = labels.filter(annotator_id=filters.annotator)
    if exclude_annotator is not None:
        labels = labels.exclude(annotator_id=exclude_annotator)
    if min_gold_accuracy is not None:
        gold = gold_accuracy_for_project(project=project)
        good = [
            uid
            for uid, g in gold.items()
            if g["accuracy"] is not None and g["accuracy"] >= min_gold_accuracy
        ]
        labels = labels.filter(annotator_id__in=good)
    return labels


@dataclass(frozen=True)
class NextLabel:
    label_id: int
    page: int


def review_next_pending(
    *,
    project: Project,
    filters: ReviewFilters,
    page_size: int,
    prefer: int | None = None,
    exclude_annotator: int | None = None,
) -> NextLabel | None:
    """Where the review page goes after a decision: ``prefer`` (the next pending
    label after the decided one, in the order the reviewer saw; review.js sends
    it) when it is still pending and still in the queue, else the queue's first
    pending label; with the queue page that now holds it (a decision changes
    agreement, so comparisons can move). Never ``exclude_annotator``'s labels
    (a reviewer's own, which they may not judge). None: nothing left pending."""
    queue = review_queue(project=project, filters=filters).prefetch_related(None)
    pending = Label.objects.filter(
        comparison__project=project,
        review_state=Label.ReviewState.PENDING,
        ranking__isnull=True,
    )
    if filters.annotator is not None:
        pending = pending.filter(annotator_id=filters.annotator)
    if exclude_annotator is not None:
        pending = pending.exclude(annotator_id=exclude_annotator)
    target = None
    if prefer is not None:
        target = pending.filter(pk=prefer).values_list("pk", "comparison_id").first()
    if target is None:
        first = (
            queue.filter(Exists(pending.filter(comparison=OuterRef("pk"))))
            .values_list("pk", flat=True)
            .first()
        )
        if first is None:
            return None
        target = (
            pending.filter(comparison_id=first)
            .order_by("created_at", "pk")
            .values_list("pk", "comparison_id")
            .first()
        )
    # The comparison's position in the queue's order: one column of ids, cheap
    # next to rendering a page (and a label outside the filters is not there).
    ids = list(queue.values_list("pk", flat=True))
    try:
        index = ids.index(target[1])
    except ValueError:
        return None
    return NextLabel(label_id=target[0], page=index // page_size + 1)
