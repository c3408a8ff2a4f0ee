"""Writes on annotators' memberships that follow from their data quality."""

from __future__ import annotations

from django.db import transaction

from labelapp.models import Membership, Project
from labelapp.selectors.quality import annotator_flags


def annotators_flag_and_pause(*, project: Project) -> list[int]:
    """Flag annotators below the gold bar, pairwise or ranking
    (``labelapp.selectors.quality.gold_flags``), and, when the project says so,
    pause their memberships (paused annotators get no new comparisons or ranking
    items; existing labels stay). Returns the ids of the users paused by this call;
    already paused members are left alone so an admin's own pause reason is kept.
    Annotators without a membership (imported labels) have nothing to pause."""
    if not project.pause_flagged_annotators:
        return []
    flags = annotator_flags(project=project)
    if not flags:
        return []
    paused: list[int] = []
    with transaction.atomic():
        # Lock the rows so a concurrent admin "unpause" is not overwritten by a stale
        # read: whoever commits last wins, and both see the other's committed state.
        members = Membership.objects.select_for_update().filter(
            project=project, user_id__in=list(flags), paused=False
        )
        for m in members:
            m.paused = True
            m.paused_reason = flags[m.user_id][:300]
            m.save(update_fields=["paused", "paused_reason"])
            paused.append(m.user_id)
    return sorted(paused)
