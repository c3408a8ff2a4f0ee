"""Gold items: comparisons with a known answer, and ranking items with a known
order, used to measure annotators.

Services only (writes). ``gold_choice_check`` is the rule every write of a gold answer
obeys. Marking is an admin action; the import is all-or-nothing so a half-imported
file cannot leave some items gold and others not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labelapp import access
from labelapp.errors import ImportFailed, PermissionDenied, ValidationFailed
from labelapp.models import Choice, Comparison, Project, RankingItem
from training.rankings import RankingError, check_tiers

# "Both bad" is a judgement of quality, not of preference; as a gold answer it would
# make every decisive label a miss, so gold answers are a preference.
GOLD_CHOICES: tuple[str, ...] = (Choice.A.value, Choice.B.value, Choice.TIE.value)


def gold_choice_check(*, is_gold: bool, gold_choice: str) -> None:
    """The one gold rule, for every write of ``gold_choice`` (API create and PATCH,
    the review page, the import): a gold comparison has an answer, a / b / tie; a
    comparison that is not gold has none (an answer there would have no effect).
    Raises ``ValidationFailed`` naming the field."""
    if is_gold:
        if not gold_choice:
            raise ValidationFailed(
                "gold_choice: a gold comparison needs an answer "
                f"({', '.join(GOLD_CHOICES)})"
            )
        if gold_choice not in GOLD_CHOICES:
            raise ValidationFailed(
                f"gold_choice: must be one of {', '.join(GOLD_CHOICES)}, not "
                f'{gold_choice!r} ("both bad" judges quality, not preference, so it '
                "cannot be a gold answer)"
            )
    elif gold_choice:
        raise ValidationFailed(
            "gold_choice: only a gold comparison has an answer, and this one is not "
            "gold (create it with is_gold, or mark it gold on the review page)"
        )


def _check_admin(by: AbstractBaseUser | None, project_id: int) -> None:
    # ``by=None`` is the management command: whoever runs it has the database.
    if by is not None and not access.can_admin(user=by, project=project_id):
        raise PermissionDenied("Only admins of this project may manage gold items.")


def comparison_mark_gold(
    *,
    comparison: Comparison,
    choice: str | None,
    by: AbstractBaseUser | None,
) -> Comparison:
    """Make ``comparison`` a gold item with answer ``choice`` (canonical a / b / tie),
    or stop it being one when ``choice`` is empty.

    Existing labels keep their values; gold accuracy is computed at read time, so it
    reflects the new answer at once."""
    _check_admin(by, comparison.project_id)
    gold_choice_check(is_gold=bool(choice), gold_choice=choice or "")
    with transaction.atomic():
        locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
        locked.is_gold = bool(choice)
        locked.gold_choice = choice or ""
        locked.save(update_fields=["is_gold", "gold_choice"])
    return locked


def _parse_line(number: int, line: str) -> tuple[int, str]:
    try:
        row: Any = json.loads(line)
    except ValueError as exc:
        raise ImportFailed(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(row, dict):
        raise ImportFailed(f"line {number}: expected a JSON object")
    unknown = set(row) - {"comparison_id", "gold_choice"}
    if unknown:
        raise ImportFailed(f"line {number}: unknown keys {', '.join(sorted(unknown))}")
    cid = row.get("comparison_id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise ImportFailed(f"line {number}: comparison_id must be an integer")
    choice = row.get("gold_choice")
    if choice not in GOLD_CHOICES:
        raise ImportFailed(
            f"line {number}: gold_choice must be one of {', '.join(GOLD_CHOICES)}"
        )
    return cid, choice


def gold_import(
    *,
    project: Project,
    lines: Iterable[str],
    by: AbstractBaseUser | None = None,
) -> int:
    """Mark the comparisons listed in JSON lines ``{"comparison_id": N,
    "gold_choice": "a"|"b"|"tie"}`` as gold. Blank lines are skipped.

    All or nothing: any bad line (malformed, unknown comparison, a comparison of
    another project, the same comparison twice) raises ``ImportFailed`` naming the
    line and nothing is changed. Returns the number of items marked."""
    _check_admin(by, project.pk)
    wanted: dict[int, tuple[int, str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cid, choice = _parse_line(number, line)
        if cid in wanted:
            raise ImportFailed(
                f"line {number}: comparison {cid} already given on line "
                f"{wanted[cid][0]}"
            )
        wanted[cid] = (number, choice)
    with transaction.atomic():
        found = {
            c.pk: c
            for c in Comparison.objects.select_for_update().filter(
                pk__in=list(wanted), project=project
            )
        }
        for cid, (number, _choice) in sorted(wanted.items(), key=lambda kv: kv[1]):
            if cid not in found:
                raise ImportFailed(
                    f"line {number}: comparison {cid} is not in project "
                    f"{project.pk} ({project.name})"
                )
        for cid, (_number, choice) in wanted.items():
            found[cid].is_gold = True
            found[cid].gold_choice = choice
        Comparison.objects.bulk_update(found.values(), ["is_gold", "gold_choice"])
    return len(wanted)


def ranking_item_mark_gold(
    *,
    item: RankingItem,
    tiers: object,
    by: AbstractBaseUser | None,
) -> RankingItem:
    """Make ``item`` a gold item with the known order ``tiers`` (tiers of response
    ids, best first; ties and a top-k order allowed, as for a ranking), or stop it
    being one when ``tiers`` is None. Rankings keep their values; gold agreement
    is computed at read time (labelapp.selectors.quality), so it reflects the new
    order at once. ValidationFailed (field ``tiers``) for an order that is not a
    ranking of the item's responses."""
    _check_admin(by, item.project_id)
    checked = None
    if tiers is not None:
        try:
            checked = check_tiers(tiers, list(item.response_ids))
        except RankingError as exc:
            raise ValidationFailed(f"tiers: {exc}") from None
    with transaction.atomic():
        locked = RankingItem.objects.select_for_update().get(pk=item.pk)
        locked.is_gold = checked is not None
        locked.gold_tiers = checked
        locked.save(update_fields=["is_gold", "gold_tiers"])
    return locked
