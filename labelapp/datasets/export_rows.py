"""Row producers of the exports (reads): stream a project's preference pairs, SFT
examples or labels from the database in chunks of plain rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Q

from labelapp.datasets.export_formats import (
    ExportOptions,
    ProgressFn,
    annotator_pseudonym,
    clean_messages,
    messages_to_text,
    strength_margin,
)
from labelapp.models import Comparison, Label, Project, SFTExample, displayed_choice
from labelapp.services.aggregates import STRENGTH_CHOICES, Aggregate, aggregate_labels

NOT_REJECTED = ~Q(labels__review_state=Label.ReviewState.REJECTED)


def _labels_array(column: str) -> ArrayAgg:
    """One column of a comparison's non-rejected labels, as an array. Every such
    array has the same filter and order, so their elements line up label by label.
    The negated filter also passes the all-NULL row that the LEFT JOIN gives a
    comparison without labels, so that row is excluded by name."""
    return ArrayAgg(
        f"labels__{column}",
        filter=Q(labels__id__isnull=False) & NOT_REJECTED,
        order_by="labels__id",
        default=[],
    )


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def preference_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of preference rows. Each comparison's labels are gathered in SQL
    (array_agg, GROUP BY the comparison only, so no text is grouped) and aggregated
    by ``aggregate_labels``, the same function as the stored aggregates; prompts and
    response texts are then fetched per chunk, so no query ever holds more than one
    chunk of text."""

    agg = (
        Comparison.objects.filter(project=project)
        .annotate(
            choices=_labels_array("choice"),
            p_as=_labels_array("p_a"),
            strengths=_labels_array("strength"),
        )
        .order_by("id")
        .values_list("id", "choices", "p_as", "strengths")
    )
    total = Comparison.objects.filter(project=project).count()
    seen = 0
    for chunk in _chunks(agg.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        seen += len(chunk)
        kept: list[tuple[int, Aggregate]] = []
        for cid, choices, p_as, strengths in chunk:
            a = aggregate_labels(zip(choices, p_as, strengths, strict=True))
            if a.n_labels == 0:
                counts["no_labels"] += 1
            elif a.p_a is None:
                counts["all_both_bad"] += 1
            elif abs(a.p_a - 0.5) < 1e-9:
                counts["ties"] += 1
            elif a.n_labels < opts.min_labels:
                counts["below_min_labels"] += 1
            elif (
                opts.min_agreement is not None
                and (a.agreement or 0) < opts.min_agreement
            ):
                counts["below_min_agreement"] += 1
            else:
                kept.append((cid, a))
        rows = _preference_texts(kept, opts.messages)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} comparisons read")
        yield rows


def _preference_texts(
    kept: list[tuple[int, Aggregate]], messages: bool
) -> list[dict[str, Any]]:
    if not kept:
        return []
    info = {
        r["id"]: r
        for r in Comparison.objects.filter(id__in=[cid for cid, _ in kept]).values(
            "id",
            "prompt_id",
            "prompt__messages",
            "response_a_id",
            "response_b_id",
            "response_a__text",
            "response_b__text",
            "round__number",
            "strategy",
            "origin",
        )
    }
    rows = []
    for cid, a in kept:
        c = info[cid]
        assert a.p_a is not None
        chosen_is_a = a.p_a > 0.5
        side = ("a", "b") if chosen_is_a else ("b", "a")
        chosen_text = c[f"response_{side[0]}__text"]
        rejected_text = c[f"response_{side[1]}__text"]
        prompt = clean_messages(c["prompt__messages"])
        if messages:
            prompt_v: Any = prompt
            chosen_v: Any = [{"role": "assistant", "content": chosen_text}]
            rejected_v: Any = [{"role": "assistant", "content": rejected_text}]
        else:
            prompt_v, chosen_v, rejected_v = (
                messages_to_text(prompt),
                chosen_text,
                rejected_text,
            )
        rows.append(
            {
                "prompt": prompt_v,
                "chosen": chosen_v,
                "rejected": rejected_v,
                "p_a": a.p_a,
                "p_chosen": a.p_a if chosen_is_a else 1.0 - a.p_a,
                "agreement": a.agreement,
                "n_labels": a.n_labels,
                "strength": a.mean_strength,
                "margin": strength_margin(a.p_a, a.mean_strength),
                "comparison_id": cid,
                "prompt_id": c["prompt_id"],
                "chosen_id": c[f"response_{side[0]}_id"],
                "rejected_id": c[f"response_{side[1]}_id"],
                "chosen_is_a": chosen_is_a,
                "round": c["round__number"],
                "strategy": c["strategy"],
                "origin": c["origin"],
            }
        )
    return rows


def sft_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    qs = SFTExample.objects.filter(round__project=project)
    if opts.rounds:
        qs = qs.filter(round__number__in=opts.rounds)
    total = qs.count()
    rows_qs = qs.order_by("round__number", "prompt_id").values_list(
        "prompt_id",
        "prompt__messages",
        "response_id",
        "response__text",
        "reward",
        "round__number",
    )
    seen = 0
    for chunk in _chunks(rows_qs.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        rows = []
        for prompt_id, msgs, response_id, text, reward, rnd in chunk:
            prompt = clean_messages(msgs)
            head: dict[str, Any] = (
                {"messages": [*prompt, {"role": "assistant", "content": text}]}
                if opts.messages
                else {"prompt": messages_to_text(prompt), "completion": text}
            )
            rows.append(
                {
                    **head,
                    "reward": reward,
                    "round": rnd,
                    "prompt_id": prompt_id,
                    "response_id": response_id,
                }
            )
        seen += len(chunk)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} SFT examples read")
        yield rows


def label_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    """Every label, rejected ones included (``review_state`` says which)."""
    qs = Label.objects.filter(comparison__project=project)
    total = qs.count()
    rows_qs = qs.order_by("id").values_list(
        "id",
        "comparison_id",
        "comparison__prompt_id",
        "comparison__response_a_id",
        "comparison__response_b_id",
        "annotator_id",
        "annotator__username",
        "choice",
        "strength",
        "p_a",
        "shown_swapped",
        "duration_ms",
        "rationale",
        "review_state",
        "source",
        "comparison__is_gold",
        "comparison__round__number",
        "created_at",
    )
    # One HMAC per annotator, not per label.
    names: dict[int, str] = {}
    seen = 0
    for chunk in _chunks(rows_qs.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        rows = []
        for (
            lid, cid, pid, ra, rb, uid, username, choice, strength, p_a, swapped,
            dur, rationale, state, source, is_gold, rnd, created,
        ) in chunk:  # fmt: skip
            if uid not in names:
                names[uid] = (
                    username if opts.reveal_annotators else annotator_pseudonym(uid)
                )
            rows.append(
                {
                    "label_id": lid,
                    "comparison_id": cid,
                    "prompt_id": pid,
                    "response_a_id": ra,
                    "response_b_id": rb,
                    "annotator": names[uid],
                    "choice": choice,
                    "displayed_choice": displayed_choice(choice, swapped),
                    # None for tie and both bad, also for rows stored before 0009.
                    "strength": strength if choice in STRENGTH_CHOICES else None,
                    "p_a": p_a,
                    "shown_swapped": swapped,
                    "duration_ms": dur,
                    "rationale": rationale,
                    "review_state": state,
                    "source": source,
                    "is_gold": is_gold,
                    "round": rnd,
                    "created_at": created.isoformat(),
                }
            )
        seen += len(chunk)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} labels read")
        yield rows
    counts["annotators"] = len(names)
