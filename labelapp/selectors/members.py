"""The members page's reads: each member with their labels, agreement, gold
accuracy, ranking-gold agreement and flag (the quality page's numbers:
labelapp.selectors.quality.annotator_stats), and the project's open invites."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from labelapp.models import Invite, Membership, Project
from labelapp.selectors.quality import NO_RANKING_GOLD, annotator_stats

_NO_GOLD = {"n": 0, "correct": 0, "accuracy": None}


def project_members(*, project: Project) -> list[dict[str, Any]]:
    """One row per member, admins first, then by username."""
    stats = {s["user_id"]: s for s in annotator_stats(project=project)}
    memberships = (
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username")
    )
    order = {Membership.Role.ADMIN: 0, Membership.Role.REVIEWER: 1}
    rows = []
    for m in memberships:
        s = stats.get(m.user_id, {})
        loo = s.get("loo_agreement") or {}
        rows.append(
            {
                "membership_id": m.pk,
                "username": m.user.get_username(),
                "role": m.role,
                "paused": m.paused,
                "n_labels": s.get("n_labels", 0),
                "agreement": loo.get("rate"),
                "agreement_n": loo.get("n", 0),
                "gold": s.get("gold", _NO_GOLD),
                "ranking_gold": s.get("ranking_gold", NO_RANKING_GOLD),
                "flagged": s.get("flagged", False),
                "flag_reason": s.get("flag_reason", ""),
            }
        )
    rows.sort(key=lambda r: (order.get(r["role"], 2), r["username"]))
    return rows


def open_invites(*, project: Project) -> list[Invite]:
    return list(
        Invite.objects.filter(
            project=project, used_at__isnull=True, expires_at__gt=timezone.now()
        ).order_by("-created_at")
    )
