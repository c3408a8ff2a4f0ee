"""``undo`` and ``edit``: an annotator takes back or corrects their own label while it
is unreviewed and younger than the project's ``undo_grace_seconds``.

Both run under the comparison lock that ``label``, ``skip`` and reviews take, so the
label's count, status and aggregates change with it in one transaction and a
review cannot slip in between the check and the write (a label reviewed meanwhile
is refused: the review won).

Undo deletes the label and gives the annotator their lease back (a fresh one, of the
project's lease length), so the next ``next`` resumes the same comparison. The slot
it held passes from the label to the lease: ``labels_count`` drops by one and the
annotator's live lease takes its place, so ``labels_count + live leases`` is what it
was and the comparison is never over-served; a comparison the label had completed
is open again, for this annotator's answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labelapp import access
from labelapp.errors import Conflict, NotFound, PermissionDenied
from labelapp.models import Assignment, Choice, Comparison, Label, Project
from labelapp.queue.assignments import _now
from labelapp.queue.label import (
    _NO_STRENGTH,
    _P_A,
    _validate_label_input,
    canonical_choice,
)
from labelapp.services.aggregates import comparison_aggregate_refresh


def _locked_own_label(
    label_id: int, annotator: AbstractBaseUser, now: datetime
) -> tuple[Label, Comparison]:
    """Lock the label's comparison, then read the label afresh (a separate
    statement, so it sees a review committed while we waited) and check that it is
    the annotator's, human, unreviewed and inside the grace period."""
    comparison_id = (
        Label.objects.filter(pk=label_id)
        .values_list("comparison_id", flat=True)
        .first()
    )
    if comparison_id is None:
        raise NotFound("Label not found.")
    comparison = Comparison.objects.select_for_update().get(pk=comparison_id)
    label = Label.objects.filter(pk=label_id).first()
    if label is None:
        raise NotFound("Label not found.")
    if not access.can_change_own_label(user=annotator, annotator_id=label.annotator_id):
        raise PermissionDenied(
            "Only the annotator who gave a label may undo or edit it."
        )
    if label.source != Label.Source.HUMAN or label.assignment_id is None:
        raise Conflict(
            "Only labels given on the compare page or the API can be undone or edited; "
            f"this one is {label.source}."
        )
    if label.review_state != Label.ReviewState.PENDING:
        raise Conflict(
            f"This label was {label.review_state} by a reviewer; it is final."
        )
    grace = (
        Project.objects.filter(pk=comparison.project_id)
        .values_list("undo_grace_seconds", flat=True)
        .get()
    )
    if grace <= 0:
        raise Conflict("This project does not allow undoing or editing labels.")
    if label.created_at + timedelta(seconds=grace) <= now:
        raise Conflict(
            f"Labels can be undone or edited for {grace} s after they are given; "
            "this one is older."
        )
    if comparison.status == Comparison.Status.RETIRED:
        raise Conflict("This comparison was retired; its labels are final.")
    return label, comparison


def label_undo(
    *, label_id: int, annotator: AbstractBaseUser, now: datetime | None = None
) -> Assignment:
    """Delete the annotator's label and lease its comparison back to them; returns
    the assignment (leased again). See the module docstring for the rules."""
    now = _now(now)
    with transaction.atomic():
        label, comparison = _locked_own_label(label_id, annotator, now)
        if label.notes.exists():
            raise Conflict(
                "A reviewer has written a note on this label; edit it instead of "
                "undoing it."
            )
        lease_seconds = (
            Project.objects.filter(pk=comparison.project_id)
            .values_list("lease_seconds", flat=True)
            .get()
        )
        assignment = Assignment.objects.select_for_update().get(pk=label.assignment_id)
        label.delete()
        assignment.state = Assignment.State.LEASED
        assignment.leased_at = now
        assignment.expires_at = now + timedelta(seconds=lease_seconds)
        assignment.finished_at = None
        assignment.save(
            update_fields=["state", "leased_at", "expires_at", "finished_at"]
        )
        comparison.labels_count = max(0, comparison.labels_count - 1)
        also = ["labels_count"]
        if comparison.status == Comparison.Status.COMPLETE:
            comparison.status = Comparison.Status.OPEN
            comparison.completed_at = None
            also += ["status", "completed_at"]
        comparison_aggregate_refresh(comparison, also_save=also)
        return assignment


def label_edit(
    *,
    label_id: int,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int | None = None,
    rationale: str = "",
    now: datetime | None = None,
) -> Label:
    """Change the annotator's answer. ``choice`` is in display terms, as on the
    compare page (the label remembers whether the pair was shown swapped); the
    same input rules as ``label`` apply."""
    now = _now(now)
    if choice in _NO_STRENGTH:
        strength = None
    _validate_label_input(
        {"choice": choice, "strength": strength, "rationale": rationale}
    )
    with transaction.atomic():
        label, comparison = _locked_own_label(label_id, annotator, now)
        stored = canonical_choice(choice, label.shown_swapped)
        label.choice = stored
        label.strength = strength
        label.p_a = _P_A[Choice(stored)]
        label.rationale = rationale
        label.edited_at = now
        label.save(
            update_fields=["choice", "strength", "p_a", "rationale", "edited_at"]
        )
        comparison_aggregate_refresh(comparison)
        return label
