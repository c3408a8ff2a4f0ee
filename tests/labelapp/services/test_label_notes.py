"""label_note_add, label_notes_mark_read and the notes selectors: who may write
and read a label's thread, its bounds, and the unread counts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from labelapp.errors import NotFound, ValidationFailed
from labelapp.models import NOTE_MAX_CHARS, NOTES_PER_LABEL_MAX, LabelNote, Membership
from labelapp.queue import comparison_next_for, label_submit
from labelapp.selectors.notes import (
    label_notes_for,
    my_noted_labels,
    unread_note_counts,
)
from labelapp.services.notes import label_note_add, label_notes_mark_read
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


def _label(project, annotator):
    lease = comparison_next_for(annotator=annotator, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=annotator, choice="a", strength=2
    )
    return label


@pytest.fixture
def world():
    project = make_project()
    make_comparisons(project, 3)
    author = make_user(project=project)
    return {
        "project": project,
        "author": author,
        "label": _label(project, author),
        "colleague": make_user(project=project),
        "reviewer": make_user(project=project, role="reviewer"),
        "admin": make_user(project=project, role="admin"),
        "staff": make_user(staff=True),
        "outsider": make_user(project=make_project(), role="admin"),
    }


def test_reviewer_note_is_unread_for_the_author_until_marked(world):
    note = label_note_add(
        label=world["label"], author=world["reviewer"], body="Why B here?"
    )
    assert note.read_at is None and note.author == world["reviewer"]
    project = world["project"]
    assert unread_note_counts(user=world["author"]) == {project.pk: 1}
    assert unread_note_counts(user=world["reviewer"]) == {}
    noted = list(my_noted_labels(user=world["author"], project=project))
    assert [lb.pk for lb in noted] == [world["label"].pk] and noted[0].unread == 1
    # The author answers: their own note is born read.
    answer = label_note_add(label=world["label"], author=world["author"], body="Ok")
    assert answer.read_at is not None
    assert label_notes_mark_read(user=world["author"], project=project) == 1
    assert unread_note_counts(user=world["author"]) == {}
    assert label_notes_mark_read(user=world["author"]) == 0


def test_who_sees_and_writes_a_thread(world):
    label_note_add(label=world["label"], author=world["admin"], body="admin")
    label_note_add(label=world["label"], author=world["staff"], body="staff")
    for who in ("author", "reviewer", "admin", "staff"):
        assert label_notes_for(world[who]).count() == 2, who
    for who in ("colleague", "outsider"):
        assert label_notes_for(world[who]).count() == 0, who
        # Not revealed: the same answer as a label that does not exist.
        with pytest.raises(NotFound):
            label_note_add(label=world["label"], author=world[who], body="x")
    # An annotator removed from the project no longer sees the thread.
    Membership.objects.filter(user=world["author"]).delete()
    assert label_notes_for(world["author"]).count() == 0
    with pytest.raises(NotFound):
        label_note_add(label=world["label"], author=world["author"], body="x")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "body: must not be empty"),
        ("   \n", "body: must not be empty"),
        ("x" * (NOTE_MAX_CHARS + 1), f"body: at most {NOTE_MAX_CHARS} characters"),
        ("a\x00b", "body: must not contain NUL"),
        (None, "body: must be a string"),
    ],
)
def test_bad_bodies_name_the_field(world, body, message):
    with pytest.raises(ValidationFailed, match=message):
        label_note_add(label=world["label"], author=world["reviewer"], body=body)
    assert not LabelNote.objects.exists()


def test_thread_is_capped(world):
    LabelNote.objects.bulk_create(
        LabelNote(label=world["label"], author=world["reviewer"], body="n")
        for _ in range(NOTES_PER_LABEL_MAX)
    )
    with pytest.raises(ValidationFailed, match="at most"):
        label_note_add(label=world["label"], author=world["reviewer"], body="one more")


@pytest.mark.django_db(transaction=True)
def test_concurrent_notes_do_not_pass_the_cap():
    project = make_project()
    make_comparisons(project, 1)
    author = make_user(project=project)
    reviewer = make_user(project=project, role="reviewer")
    label = _label(project, author)
    LabelNote.objects.bulk_create(
        LabelNote(label=label, author=reviewer, body="n")
        for _ in range(NOTES_PER_LABEL_MAX - 1)
    )
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def add() -> None:
        try:
            barrier.wait()
            label_note_add(label=label, author=reviewer, body="race")
            outcomes.append("ok")
        except ValidationFailed:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert LabelNote.objects.filter(label=label).count() == NOTES_PER_LABEL_MAX
