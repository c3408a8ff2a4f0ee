"""Import prompts, responses, labelled pairs and rankings into a project (the
writes).

The line formats are parsed by :mod:`labelapp.datasets.records`. All files of one
call import in one transaction: a bad line aborts everything with an
:class:`ImportFailed` naming the file, the line and the problem, and nothing is
written. ``skip_invalid=True`` instead skips bad lines and reports each of them.
Re-importing the same data adds nothing (natural keys + ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from labelapp.datasets.records import (
    Limits,
    PairRec,
    RankingRec,
    Record,
    ResponseRec,
    read_records,
)
from labelapp.errors import ImportFailed, ValidationFailed
from labelapp.models import (
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    Comparison,
    Label,
    Membership,
    Project,
    Prompt,
    Ranking,
    RankingItem,
    Response,
    content_hash,
    text_hash,
)
from labelapp.services.aggregates import aggregate_labels
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.rankings import ranking_item_create, ranking_submit

IMPORTED_USERNAME = "imported"
# The API's limits and the columns' sizes: an import stores nothing the API would
# refuse or the database cannot hold.
LIMITS = Limits(
    text_chars=MAX_TEXT_CHARS,
    messages=MAX_MESSAGES,
    external_id_chars=Prompt._meta.get_field("external_id").max_length,
    model_ref_chars=Response._meta.get_field("model_ref").max_length,
)
BATCH = 5000
Progress = Callable[[float, str], None]


@dataclass
class ImportResult:
    lines: int = 0
    created: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.lines} lines"]
        parts += [
            f"{n} new {what.replace('_', ' ')}" for what, n in self.created.items()
        ]
        if self.skipped:
            parts.append(f"{len(self.skipped)} invalid lines skipped")
        return ", ".join(parts)


def imported_annotator():
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=IMPORTED_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _chunks(items: list, size: int = BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def import_files(
    *,
    project: Project,
    paths: list[Path],
    skip_invalid: bool = False,
    make_pairs: bool = False,
    max_pairs_per_prompt: int = 6,
    progress: Progress | None = None,
    rng: random.Random | None = None,
) -> ImportResult:
    """Import every file into ``project`` atomically; see the module docstring."""
    rng = rng or random.Random()
    result = ImportResult()
    records: list[tuple[str, Record]] = []
    for path in paths:
        path = Path(path)
        where = "row" if path.suffix == ".parquet" else "line"
        for lineno, record in read_records(
            path, skip_invalid=skip_invalid, skipped=result.skipped, limits=LIMITS
        ):
            records.append((f"{path}, {where} {lineno}", record))
            if progress and len(records) % 20000 == 0:
                progress(0.0, f"read {len(records):,} lines")
    result.lines = len(records)

    with transaction.atomic():
        # Serialise imports into one project: two concurrent imports of the same
        # file would otherwise both see "missing" rows and race on the inserts.
        Project.objects.select_for_update().get(pk=project.pk)
        counts_before = _counts(project)
        prompt_ids = _write_prompts(project, records, progress)
        response_ids = _write_responses(
            project, records, prompt_ids, skip_invalid, result
        )
        _write_pairs(project, records, prompt_ids, response_ids, rng, progress)
        _write_rankings(project, records, prompt_ids, response_ids)
        if make_pairs:
            _make_pairs(project, set(prompt_ids.values()), max_pairs_per_prompt, rng)
        counts_after = _counts(project)
    result.created = {
        k: counts_after[k] - counts_before[k]
        for k in counts_after
        # Ranking counts are reported only for files that hold rankings.
        if k in _ALWAYS_COUNTED or counts_after[k] != counts_before[k]
    }
    if progress:
        progress(1.0, result.summary())
    return result


_ALWAYS_COUNTED = ("prompts", "responses", "comparisons", "labels")


def _counts(project: Project) -> dict[str, int]:
    return {
        "prompts": Prompt.objects.filter(project=project).count(),
        "responses": Response.objects.filter(prompt__project=project).count(),
        "comparisons": Comparison.objects.filter(project=project).count(),
        "labels": Label.objects.filter(comparison__project=project).count(),
        "ranking_items": RankingItem.objects.filter(project=project).count(),
        "rankings": Ranking.objects.filter(item__project=project).count(),
        "gold_ranking_items": RankingItem.objects.filter(
            project=project, is_gold=True
        ).count(),
    }


def _write_prompts(
    project: Project, records: list, progress: Progress | None
) -> dict[str, int]:
    """Insert every conversation once; return content hash → prompt id."""
    wanted: dict[str, Prompt] = {}
    for _, rec in records:
        messages = getattr(rec, "messages", None)
        if messages is None:
            continue
        digest = content_hash(messages)
        if digest not in wanted:
            wanted[digest] = Prompt(
                project=project,
                messages=messages,
                content_hash=digest,
                external_id=getattr(rec, "external_id", "") or "",
            )
    rows = list(wanted.values())
    for i, chunk in enumerate(_chunks(rows)):
        Prompt.objects.bulk_create(chunk, ignore_conflicts=True)
        if progress:
            done = min(len(rows), (i + 1) * BATCH)
            progress(
                0.5 * done / max(1, len(rows)), f"prompts {done:,} / {len(rows):,}"
            )
    ids: dict[str, int] = {}
    hashes = list(wanted)
    for chunk in _chunks(hashes, 20000):
        ids.update(
            Prompt.objects.filter(project=project, content_hash__in=chunk).values_list(
                "content_hash", "id"
            )
        )
    return ids


def _write_responses(
    project: Project,
    records: list,
    prompt_ids: dict[str, int],
    skip_invalid: bool,
    result: ImportResult,
) -> dict[tuple[int, str], int]:
    """Insert responses (single and pair texts); return (prompt id, hash) → id."""
    external: dict[str, int] = {}
    needed_ext = {r.external_id for _, r in records if isinstance(r, ResponseRec)}
    needed_ext.discard("")
    if needed_ext:
        for chunk in _chunks(sorted(needed_ext), 20000):
            external.update(
                Prompt.objects.filter(project=project, external_id__in=chunk)
                .order_by("id")
                .values_list("external_id", "id")
            )
    wanted: dict[tuple[int, str], Response] = {}

    def add(prompt_id: int, text: str, model_ref: str = "") -> None:
        key = (prompt_id, text_hash(text))
        if key not in wanted:
            wanted[key] = Response(
                prompt_id=prompt_id,
                text=text,
                text_hash=key[1],
                origin=Response.Origin.IMPORT,
                model_ref=model_ref,
            )

    for where, rec in records:
        if isinstance(rec, ResponseRec):
            if rec.messages is not None:
                prompt_id = prompt_ids[content_hash(rec.messages)]
            else:
                found = external.get(rec.external_id)
                if found is None:
                    message = (
                        f"{where}: no prompt with question_id/uid "
                        f"{rec.external_id!r} in project {project.name!r}; import "
                        "the questions file first (or before the answers in the "
                        "same command)"
                    )
                    if not skip_invalid:
                        raise ImportFailed(message)
                    result.skipped.append(message)
                    continue
                prompt_id = found
            add(prompt_id, rec.text, rec.model_ref)
        elif isinstance(rec, PairRec):
            prompt_id = prompt_ids[content_hash(rec.messages)]
            add(prompt_id, rec.text_a)
            add(prompt_id, rec.text_b)
        elif isinstance(rec, RankingRec):
            prompt_id = prompt_ids[content_hash(rec.messages)]
            for text in rec.texts:
                add(prompt_id, text)
    for chunk in _chunks(list(wanted.values())):
        Response.objects.bulk_create(chunk, ignore_conflicts=True)
    ids: dict[tuple[int, str], int] = {}
    keys = list(wanted)
    for chunk in _chunks(keys, 20000):
        found = Response.objects.filter(
            prompt_id__in={k[0] for k in chunk}, text_hash__in={k[1] for k in chunk}
        ).values_list("prompt_id", "text_hash", "id")
        ids.update({(p, h): i for p, h, i in found})
    return ids


def _choice_for(p_a: float) -> str:
    return "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"


def _write_pairs(
    project: Project,
    records: list,
    prompt_ids: dict[str, int],
    response_ids: dict[tuple[int, str], int],
    rng: random.Random,
    progress: Progress | None,
) -> None:
    pairs = [rec for _, rec in records if isinstance(rec, PairRec)]
    if not pairs:
        return
    annotator = imported_annotator()
    now = timezone.now()
    comparisons: dict[tuple[int, int], Comparison] = {}
    label_p: dict[tuple[int, int], tuple[float, int | None]] = {}
    for rec in pairs:
        prompt_id = prompt_ids[content_hash(rec.messages)]
        a = response_ids[(prompt_id, text_hash(rec.text_a))]
        b = response_ids[(prompt_id, text_hash(rec.text_b))]
        p_a = rec.p_a
        if a > b:  # canonical orientation: lower response id is A
            a, b, p_a = b, a, 1.0 - p_a
        if (a, b) in comparisons:
            continue
        # A tie prefers neither response: no strength (as label_submit stores it).
        strength = rec.strength if _choice_for(p_a) != "tie" else None
        agg = aggregate_labels([(_choice_for(p_a), p_a, strength)])
        comparisons[(a, b)] = Comparison(
            project=project,
            prompt_id=prompt_id,
            response_a_id=a,
            response_b_id=b,
            origin=Comparison.Origin.IMPORT,
            labels_required=1,
            labels_count=1,
            status=Comparison.Status.COMPLETE,
            random_key=rng.random(),
            p_a=agg.p_a,
            majority=agg.majority,
            agreement=agg.agreement,
            mean_strength=agg.mean_strength,
            both_bad_count=agg.both_bad_count,
            completed_at=now,
        )
        label_p[(a, b)] = (p_a, strength)
    rows = list(comparisons.values())
    for chunk in _chunks(rows):
        Comparison.objects.bulk_create(chunk, ignore_conflicts=True)
    comparison_ids: dict[tuple[int, int], int] = {}
    keys = list(comparisons)
    for chunk in _chunks(keys, 20000):
        found = Comparison.objects.filter(
            response_a_id__in={k[0] for k in chunk},
            response_b_id__in={k[1] for k in chunk},
        ).values_list("response_a_id", "response_b_id", "id")
        comparison_ids.update({(a, b): i for a, b, i in found if (a, b) in label_p})
    labels = [
        Label(
            comparison_id=comparison_ids[key],
            annotator=annotator,
            choice=_choice_for(p_a),
            strength=strength,
            p_a=p_a,
            source=Label.Source.IMPORTED,
            review_state=Label.ReviewState.ACCEPTED,
        )
        for key, (p_a, strength) in label_p.items()
    ]
    for i, chunk in enumerate(_chunks(labels)):
        Label.objects.bulk_create(chunk, ignore_conflicts=True)
        if progress:
            done = min(len(labels), (i + 1) * BATCH)
            progress(
                0.5 + 0.5 * done / len(labels), f"pairs {done:,} / {len(labels):,}"
            )


def _write_rankings(
    project: Project,
    records: list,
    prompt_ids: dict[str, int],
    response_ids: dict[tuple[int, str], int],
) -> None:
    """A ranking item per ranking record and, where the line has a ranking, the
    ``imported`` pseudo-annotator's ranking of it (its implied pairs accepted, as
    imported pairs are). A second line with the same responses and a ranking
    replaces the first's ranking: one ranking per annotator and item. A line with
    ``gold_tiers`` makes its item gold through the service the API and the review
    page use (``ranking_item_mark_gold``); a later line's order replaces an
    earlier one's, and a line without one leaves the item as it is."""
    annotator = None
    for _, rec in records:
        if not isinstance(rec, RankingRec):
            continue
        prompt_id = prompt_ids[content_hash(rec.messages)]
        ids = [response_ids[(prompt_id, text_hash(t))] for t in rec.texts]
        # A ranked line is complete as it stands (k = 1), as an imported pair is.
        item = ranking_item_create(
            project=project,
            prompt_id=prompt_id,
            response_ids=ids,
            labels_required=1 if rec.tiers is not None else None,
        )
        if rec.gold_tiers is not None:
            ranking_item_mark_gold(
                item=item,
                tiers=[[ids[i] for i in tier] for tier in rec.gold_tiers],
                by=None,
            )
        if rec.tiers is None:
            continue
        annotator = annotator or imported_annotator()
        ranking_submit(
            item=item,
            annotator=annotator,
            tiers=[[ids[i] for i in tier] for tier in rec.tiers],
            source=Label.Source.IMPORTED,
        )


def _make_pairs(
    project: Project, prompt_ids: set[int], max_per_prompt: int, rng: random.Random
) -> None:
    """Open comparisons among each prompt's responses, for annotators to label."""
    by_prompt: dict[int, list[int]] = {}
    for prompt_id, response_id in Response.objects.filter(
        prompt_id__in=prompt_ids
    ).values_list("prompt_id", "id"):
        by_prompt.setdefault(prompt_id, []).append(response_id)
    rows = []
    for prompt_id, response_ids in by_prompt.items():
        pairs = list(combinations(sorted(response_ids), 2))
        rng.shuffle(pairs)
        for a, b in pairs[:max_per_prompt]:
            rows.append(
                Comparison(
                    project=project,
                    prompt_id=prompt_id,
                    response_a_id=a,
                    response_b_id=b,
                    origin=Comparison.Origin.IMPORT,
                    labels_required=project.overlap,
                    random_key=rng.random(),
                )
            )
    for chunk in _chunks(rows):
        Comparison.objects.bulk_create(chunk, ignore_conflicts=True)


# Strongest first: adding a user with a weaker role never demotes them.
_ROLE_RANK = {
    Membership.Role.ANNOTATOR: 0,
    Membership.Role.REVIEWER: 1,
    Membership.Role.ADMIN: 2,
}


def project_members_add(
    *, project: Project, usernames_by_role: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Make existing users members of ``project`` (role → usernames); return the
    usernames whose membership was created or raised, by role.

    Every username is looked up before anything is written, so one unknown name
    refuses the whole call (``ValidationFailed`` naming each unknown one). A user
    named under several roles gets the strongest; an existing member keeps a
    stronger role than the one asked for."""
    wanted: dict[str, str] = {}
    for role, names in usernames_by_role.items():
        if role not in _ROLE_RANK:
            raise ValidationFailed(f"unknown role {role!r}")
        for name in names:
            if name not in wanted or _ROLE_RANK[role] > _ROLE_RANK[wanted[name]]:
                wanted[name] = role
    users = {
        u.get_username(): u
        for u in get_user_model().objects.filter(username__in=list(wanted))
    }
    unknown = sorted(set(wanted) - set(users))
    if unknown:
        raise ValidationFailed(
            f"no such user: {', '.join(unknown)} (create the account first, e.g. "
            "with manage.py create_user)"
        )
    changed: dict[str, list[str]] = {}
    with transaction.atomic():
        for name, role in sorted(wanted.items()):
            membership, created = Membership.objects.select_for_update().get_or_create(
                project=project, user=users[name], defaults={"role": role}
            )
            if not created and _ROLE_RANK[role] > _ROLE_RANK[membership.role]:
                membership.role = role
                membership.save(update_fields=["role"])
                created = True
            if created:
                changed.setdefault(role, []).append(name)
    return changed
