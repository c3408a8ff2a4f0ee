"""Writes on annotators' memberships that follow from their data quality."""

from __future__ import annotations

from django.db import transaction

from labelapp.models import Membership, Project
from labelapp.selectors.quality import gold_accuracy_for_project
from labelapp.selectors.quality_stats import gold_flagged


def annotators_flag_and_pause(*, project: Project) -> list[int]:
    """Flag annotators below the gold bar and, when the project says so,
    pause their memberships (paused annotators get no new comparisons; existing
    labels stay). Returns the ids of the users paused by this call; already paused
    members are left alone so an admin's own pause reason is kept. Annotators without
    a membership (imported labels) have nothing to pause."""
    if not project.pause_flagged_annotators:
        return []
    gold = gold_accuracy_for_project(project=project)
    flagged = gold_flagged(
        gold, min_count=project.gold_min_count, min_accuracy=project.gold_min_accuracy
    )
    if not flagged:
        return []
    paused: list[int] = []
    with transaction.atomic():
        # Lock the rows so a concurrent admin "unpause" is not overwritten by a stale
        # read: whoever commits last wins, and both see the other's committed state.
        members = Membership.objects.select_for_update().filter(
            project=project, user_id__in=flagged, paused=False
        )
        for m in members:
            g = gold[m.user_id]
            m.paused = True
            m.paused_reason = (
                f"Gold accuracy {g['accuracy']:.0%} on {g['n']} gold labels is below "
                f"{project.gold_min_accuracy:.0%}."
            )[:300]
            m.save(update_fields=["paused", "paused_reason"])
            paused.append(m.user_id)
    return sorted(paused)
