"""Discussion notes on labels (issue 18 item 6) and the round notice's "seen"
mark (item 5): writes only; the reads are in ``labelapp.selectors.notes``."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labelapp import access
from labelapp.errors import NotFound, ValidationFailed
from labelapp.models import (
    NOTE_MAX_CHARS,
    NOTES_PER_LABEL_MAX,
    Label,
    LabelNote,
    Membership,
    Project,
)


def label_note_problems(body: object) -> str | None:
    """What is wrong with a note's text, naming the field; None when it is fine."""
    if not isinstance(body, str):
        return "body: must be a string"
    if not body.strip():
        return "body: must not be empty"
    if len(body) > NOTE_MAX_CHARS:
        return f"body: at most {NOTE_MAX_CHARS} characters"
    if "\x00" in body:
        return "body: must not contain NUL characters"
    return None


def label_note_add(
    *,
    label: Label,
    author: AbstractBaseUser,
    body: str,
    now: datetime | None = None,
) -> LabelNote:
    """Add a note to ``label``'s thread. A user who may not see the label's notes
    gets NotFound (its existence is not revealed); a thread is capped at
    NOTES_PER_LABEL_MAX notes. The annotator's own notes are born read."""
    project_id = label.comparison.project_id
    if not access.can_see_label_notes(
        user=author, label_annotator_id=label.annotator_id, project=project_id
    ):
        raise NotFound("Label not found.")
    if problem := label_note_problems(body):
        raise ValidationFailed(problem)
    now = now or timezone.now()
    with transaction.atomic():
        # Lock the label so two concurrent notes cannot both pass the cap.
        locked = Label.objects.select_for_update().filter(pk=label.pk).first()
        if locked is None:
            raise NotFound("Label not found.")
        if LabelNote.objects.filter(label=locked).count() >= NOTES_PER_LABEL_MAX:
            raise ValidationFailed(
                f"body: a label holds at most {NOTES_PER_LABEL_MAX} notes"
            )
        note = LabelNote.objects.create(
            label=locked,
            author=author,
            body=body,
            read_at=now if author.pk == locked.annotator_id else None,
        )
    return note


def label_notes_mark_read(
    *,
    user: AbstractBaseUser,
    project: Project | int | None = None,
    now: datetime | None = None,
) -> int:
    """Mark the notes on ``user``'s own labels (of one project, or all) as read;
    returns how many were unread. Notes on other people's labels are not the
    user's to mark."""
    qs = LabelNote.objects.filter(label__annotator=user, read_at__isnull=True)
    if project is not None:
        pid = project.pk if isinstance(project, Project) else int(project)
        qs = qs.filter(label__comparison__project_id=pid)
    return qs.update(read_at=now or timezone.now())


def round_notices_mark_seen(
    *, user: AbstractBaseUser, project: Project, now: datetime | None = None
) -> None:
    """The member has seen the round notices of ``project`` up to ``now`` (the
    compare page calls this once it has shown them)."""
    Membership.objects.filter(project=project, user=user).update(
        rounds_seen_at=now or timezone.now()
    )
