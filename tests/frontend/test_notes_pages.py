"""The home page's news and counts, the compare page's round notice and the notes
pages: what each member sees, that seeing marks it seen, and that notes render as
text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from labelapp.models import Comparison, LabelNote, Membership, Round
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.notes import label_note_add
from tests.frontend.conftest import client_for
from tests.frontend.xss_corpus import XSS_PAYLOADS
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    project = make_project(name="Helpfulness")
    make_comparisons(project, 3)
    author = make_user(project=project)
    lease = comparison_next_for(annotator=author, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=author, choice="a", strength=2
    )
    reviewer = make_user(project=project, role="reviewer")
    return {
        "project": project,
        "author": author,
        "label": label,
        "reviewer": reviewer,
        "colleague": make_user(project=project),
    }


def _round(project, number, pairs):
    rnd = Round.objects.create(
        project=project,
        number=number,
        policy_ref="p",
        status=Round.Status.DONE,
        finished_at=timezone.now() - timedelta(seconds=5),
    )
    for c in make_comparisons(project, pairs, start=100 * number):
        Comparison.objects.filter(pk=c.pk).update(round=rnd, origin="round")


def test_home_shows_daily_counts_and_unread_notes(world):
    home = reverse("frontend:projects")
    page = client_for(world["author"]).get(home).content.decode()
    assert "Your labels per day" in page
    today = timezone.now().date().isoformat()
    assert f'data-day="{today}"><span class="daily-bar level-8"' in page
    assert "new note" not in page
    label_note_add(label=world["label"], author=world["reviewer"], body="Why A?")
    page = client_for(world["author"]).get(home).content.decode()
    assert "1 new note on your labels" in page
    assert reverse("frontend:my-notes", args=[world["project"].pk]) in page
    # Someone else's label: no count for the colleague.
    assert "new note" not in client_for(world["colleague"]).get(home).content.decode()


def test_round_notice_until_the_compare_page_is_opened(world):
    _round(world["project"], 3, 2)
    home = reverse("frontend:projects")
    client = client_for(world["author"])
    assert "Round 3 added 2 pairs" in client.get(home).content.decode()
    compare = client.get(reverse("frontend:compare", args=[world["project"].pk]))
    assert "Round 3 added 2 pairs" in compare.content.decode()
    assert Membership.objects.get(user=world["author"]).rounds_seen_at is not None
    assert "Round 3 added" not in client.get(home).content.decode()
    # Each member keeps their own mark.
    assert "Round 3 added" in client_for(world["colleague"]).get(home).content.decode()
    # Staff who are not members get no notice.
    staff = client_for(make_user(staff=True))
    assert "Round 3 added" not in staff.get(home).content.decode()


@pytest.mark.parametrize("payload", [p for p in XSS_PAYLOADS if "<" in p][:8])
def test_notes_render_as_text(world, payload):
    label_note_add(label=world["label"], author=world["reviewer"], body=payload)
    project = world["project"]
    notes = client_for(world["author"]).get(
        reverse("frontend:my-notes", args=[project.pk])
    )
    review = client_for(world["reviewer"]).get(
        reverse("frontend:review", args=[project.pk])
    )
    for response in (notes, review):
        text = response.content.decode()
        assert payload not in text
        assert escape(payload).replace("\n", "<br>") in text


def test_notes_page_marks_read_and_the_author_answers(world):
    project = world["project"]
    label_note_add(label=world["label"], author=world["reviewer"], body="Why A?")
    client = client_for(world["author"])
    page = client.get(reverse("frontend:my-notes", args=[project.pk]))
    assert "1 new note" in page.content.decode() and "Why A?" in page.content.decode()
    assert not LabelNote.objects.filter(read_at__isnull=True).exists()
    url = reverse("frontend:my-notes-reply", args=[project.pk, world["label"].pk])
    answer = client.post(url, {"body": "The prompt asks for brevity."})
    assert answer.status_code == 302
    assert answer["Location"].endswith(f"#note-label-{world['label'].pk}")
    assert LabelNote.objects.filter(author=world["author"]).count() == 1
    # A blank answer is refused with the field named, nothing written.
    client.post(url, {"body": "  "})
    page = client.get(reverse("frontend:my-notes", args=[project.pk])).content
    assert "body: must not be empty" in page.decode()
    assert LabelNote.objects.count() == 2
    # Nobody answers on someone else's label.
    assert client_for(world["colleague"]).post(url, {"body": "x"}).status_code == 404


def test_reviewer_note_from_the_review_page(world):
    project = world["project"]
    url = reverse("frontend:review-label-note", args=[project.pk, world["label"].pk])
    client = client_for(world["reviewer"])
    resp = client.post(url, {"body": "See rule 2.", "page": "1"})
    assert resp.status_code == 302
    assert resp["Location"].endswith(f"#label-{world['label'].pk}")
    note = LabelNote.objects.get()
    assert note.author == world["reviewer"] and note.body == "See rule 2."
    review = client.get(reverse("frontend:review", args=[project.pk])).content
    assert "See rule 2." in review.decode()
    client.post(url, {"body": "x" * 2001})
    assert LabelNote.objects.count() == 1
