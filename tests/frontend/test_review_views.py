"""Review queue, label review and gold items through Django's test client."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from labelapp.datasets.exports import export_run
from labelapp.errors import PermissionDenied
from labelapp.models import Comparison, Label, Project
from labelapp.services.aggregates import comparison_aggregate_refresh
from labelapp.services.gold import comparison_mark_gold
from tests.frontend.conftest import client_for, make_comparison
from tests.frontend.dashboard_data import DemoProject

pytestmark = pytest.mark.django_db


def _matrix(demo: DemoProject) -> list[tuple[Any, int]]:
    return [
        (demo.annotators[0], 403),
        (demo.outsider, 404),
        (demo.reviewer, 200),
        (demo.admin, 200),
    ]


def test_review_page_permissions(demo: DemoProject) -> None:
    url = reverse("frontend:review", args=[demo.project.pk])
    anon = client_for(None).get(url)
    assert anon.status_code == 302 and reverse("frontend:login") in anon["Location"]
    for user, status in _matrix(demo):
        assert client_for(user).get(url).status_code == status, user.username


def test_review_page_shows_disagreement_first(demo: DemoProject) -> None:
    page = client_for(demo.reviewer).get(
        reverse("frontend:review", args=[demo.project.pk])
    )
    items = page.context["items"]
    first = items[0]["comparison"]
    # A gold miss sorts first; after the gold misses, agreement ascends.
    assert first.gold_miss
    rest = [i["comparison"] for i in items if not i["comparison"].gold_miss]
    agreements = [c.agreement for c in rest]
    assert agreements == sorted(agreements)
    html = page.content.decode()
    # Prompt and responses are rendered markdown, every label has its annotator.
    assert "<strong>hash map</strong>" in html or "<em>" in html
    label = first.labels.all()[0]
    assert f'id="label-{label.pk}"' in html
    assert label.annotator.username in html


def test_review_filters(demo: DemoProject) -> None:
    url = reverse("frontend:review", args=[demo.project.pk])
    client = client_for(demo.reviewer)
    by_round = client.get(url, {"round": "2"}).context["items"]
    assert by_round and all(i["comparison"].round.number == 2 for i in by_round)
    by_origin = client.get(url, {"origin": "import"}).context["page"]
    assert by_origin.paginator.count == 6
    bob = demo.annotators[1]
    by_annotator = client.get(url, {"annotator": str(bob.pk)}).context["page"]
    assert by_annotator.paginator.count == Label.objects.filter(annotator=bob).count()
    # Malformed filter values are ignored, not errors.
    assert client.get(url, {"round": "x", "origin": "nope"}).status_code == 200


def _preference_rows(demo: DemoProject, tmp_path: Path) -> dict[str, dict]:
    folder = export_run(
        project=demo.project,
        kind="preferences",
        options={"out_dir": str(tmp_path), "messages": False},
    )
    rows = [
        json.loads(line)
        for line in (folder / "preferences.jsonl").read_text().splitlines()
    ]
    return {r["comparison_id"]: r for r in rows}


def test_reject_and_accept_change_p_a_and_export(
    demo: DemoProject, tmp_path: Path
) -> None:
    # An import comparison with three decisive labels for A: 3 × p_a 1.0.
    comparison = next(
        c
        for c in demo.comparisons
        if not c.is_gold and c.origin == "import" and c.p_a == 1.0
    )
    label = comparison.labels.order_by("pk").first()
    Label.objects.filter(pk=label.pk).update(choice="b", p_a=0.0, strength=3)
    comparison_aggregate_refresh(comparison)
    comparison.refresh_from_db()
    assert comparison.p_a == pytest.approx(2 / 3)
    before = _preference_rows(demo, tmp_path / "before")[comparison.pk]
    assert before["n_labels"] == 3

    client = client_for(demo.reviewer)
    url = reverse("frontend:review-label", args=[demo.project.pk, label.pk])
    response = client.post(
        url, {"state": "rejected", "note": "Careless.", "round": "", "page": "1"}
    )
    assert response.status_code == 302
    # A decision moves the reviewer on to a pending label (issue 18 item 6).
    assert _next_pending_in(response) != label.pk
    label.refresh_from_db()
    comparison.refresh_from_db()
    assert label.review_state == "rejected" and label.review_note == "Careless."
    assert label.reviewed_by == demo.reviewer
    assert comparison.p_a == pytest.approx(1.0)
    after = _preference_rows(demo, tmp_path / "after")[comparison.pk]
    assert after["n_labels"] == 2

    accepted = client.post(url, {"state": "accepted"})
    comparison.refresh_from_db()
    assert comparison.p_a == pytest.approx(2 / 3)
    assert _next_pending_in(accepted) != label.pk


def _next_pending_in(response: Any) -> int:
    """The label a review decision's redirect selects; it must be pending."""
    anchor = response["Location"].rsplit("#label-", 1)[1]
    target = Label.objects.get(pk=int(anchor))
    assert target.review_state == "pending"
    return target.pk


def test_review_label_refuses_annotators_and_bad_state(demo: DemoProject) -> None:
    label = Label.objects.filter(comparison__project=demo.project).first()
    url = reverse("frontend:review-label", args=[demo.project.pk, label.pk])
    assert (
        client_for(demo.annotators[0]).post(url, {"state": "rejected"}).status_code
        == 403
    )
    assert client_for(demo.outsider).post(url, {"state": "rejected"}).status_code == 404
    assert client_for(None).post(url, {"state": "rejected"}).status_code == 302
    client_for(demo.reviewer).post(url, {"state": "maybe"})
    label.refresh_from_db()
    assert label.review_state == "pending"
    # GET is not a way to review.
    assert client_for(demo.reviewer).get(url).status_code == 405


def test_gold_marking_from_the_review_page(demo: DemoProject) -> None:
    comparison = next(c for c in demo.comparisons if not c.is_gold)
    url = reverse("frontend:review-gold", args=[demo.project.pk, comparison.pk])
    # Reviewers may review, but gold answers are an admin's call.
    assert client_for(demo.reviewer).post(url, {"gold_choice": "a"}).status_code == 403
    response = client_for(demo.admin).post(url, {"gold_choice": "b", "origin": "round"})
    assert response.status_code == 302
    assert "origin=round" in response["Location"]
    comparison.refresh_from_db()
    assert comparison.is_gold and comparison.gold_choice == "b"
    client_for(demo.admin).post(url, {"gold_choice": ""})
    comparison.refresh_from_db()
    assert not comparison.is_gold and comparison.gold_choice == ""
    with pytest.raises(PermissionDenied):
        comparison_mark_gold(comparison=comparison, choice="a", by=demo.reviewer)


def test_import_gold_command(demo: DemoProject, tmp_path: Path) -> None:
    plain = [c for c in demo.comparisons if not c.is_gold][:3]
    good = tmp_path / "gold.jsonl"
    good.write_text(
        "\n".join(
            json.dumps({"comparison_id": c.pk, "gold_choice": ch})
            for c, ch in zip(plain, ["a", "b", "tie"], strict=True)
        )
        + "\n\n"
    )
    out = StringIO()
    call_command(
        "import_gold", "--project", str(demo.project.pk), str(good), stdout=out
    )
    assert "marked 3" in out.getvalue()
    got = dict(
        Comparison.objects.filter(pk__in=[c.pk for c in plain]).values_list(
            "pk", "gold_choice"
        )
    )
    assert got == {plain[0].pk: "a", plain[1].pk: "b", plain[2].pk: "tie"}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"comparison_id": 1, "gold_choice": "maybe"}', "line 2: gold_choice"),
        ("not json", "line 2: not valid JSON"),
        ('{"comparison_id": 999999999, "gold_choice": "a"}', "line 2: comparison"),
        ('{"comparison_id": "7", "gold_choice": "a"}', "line 2: comparison_id"),
    ],
)
def test_import_gold_is_atomic_and_names_the_line(
    demo: DemoProject, tmp_path: Path, bad_line: str, message: str
) -> None:
    plain = [c for c in demo.comparisons if not c.is_gold]
    path = tmp_path / "gold.jsonl"
    path.write_text(
        json.dumps({"comparison_id": plain[0].pk, "gold_choice": "a"})
        + "\n"
        + bad_line
        + "\n"
    )
    gold_before = Comparison.objects.filter(is_gold=True).count()
    with pytest.raises(CommandError, match=message):
        call_command("import_gold", "--project", str(demo.project.pk), str(path))
    assert Comparison.objects.filter(is_gold=True).count() == gold_before
    plain[0].refresh_from_db()
    assert not plain[0].is_gold


def test_import_gold_refuses_other_projects_comparison(
    demo: DemoProject, tmp_path: Path
) -> None:
    foreign = make_comparison(
        Project.objects.create(name="Other"),
        [{"role": "user", "content": "Hi"}],
        "Hello",
        "Hey",
        labels_required=1,
    )
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps({"comparison_id": foreign.pk, "gold_choice": "a"}))
    with pytest.raises(CommandError, match=f"line 1: comparison {foreign.pk} is not"):
        call_command("import_gold", "--project", str(demo.project.pk), str(path))


def test_staff_non_member_reviews_what_the_page_shows(
    demo: DemoProject, django_user_model: Any
) -> None:
    # The bug of issue 13: the page guard let Django staff (is_staff, not superuser)
    # in as project admins, and label_review then refused them as non-reviewers.
    staff = django_user_model.objects.create_user(
        username="staff-only", password=None, is_staff=True
    )
    client = client_for(staff)
    assert (
        client.get(reverse("frontend:review", args=[demo.project.pk])).status_code
        == 200
    )
    label = Label.objects.filter(
        comparison__project=demo.project, review_state="pending"
    ).first()
    url = reverse("frontend:review-label", args=[demo.project.pk, label.pk])
    response = client.post(url, {"state": "accepted"}, follow=True)
    label.refresh_from_db()
    assert label.review_state == "accepted", [
        str(m) for m in response.context["messages"]
    ]
    assert label.reviewed_by == staff


def test_bulk_accept_by_filter_and_gold_accuracy(demo: DemoProject) -> None:
    from labelapp.selectors.quality import gold_accuracy_for_project

    project = demo.project
    pending = Label.objects.filter(comparison__project=project, review_state="pending")
    gold = gold_accuracy_for_project(project=project)
    careless = demo.careless.pk
    assert gold[careless]["accuracy"] == 0.25
    before_careless = pending.filter(annotator_id=careless).count()
    assert before_careless > 0
    client = client_for(demo.reviewer)
    page = client.get(reverse("frontend:review", args=[project.pk]))
    assert page.context["bulk_count"] == pending.count()
    assert 'id="bulk-accept"' in page.content.decode()
    url = reverse("frontend:review-bulk-accept", args=[project.pk])

    # Gold accuracy of at least 70 %: the careless annotator (25 %) and anyone
    # without a gold label keep their pending labels.
    good = {
        u for u, g in gold.items() if g["accuracy"] is not None and g["accuracy"] >= 0.7
    }
    expected = pending.filter(annotator_id__in=good).count()
    assert expected > 0
    response = client.post(url, {"min_gold_accuracy": "70", "page": "1"})
    assert response.status_code == 302 and response["Location"].endswith("#bulk-accept")
    accepted = Label.objects.filter(
        comparison__project=project, review_state="accepted", reviewed_by=demo.reviewer
    )
    assert accepted.count() == expected
    assert not accepted.filter(annotator_id=careless).exists()
    assert pending.filter(annotator_id=careless).count() == before_careless
    # The annotator filter takes only that annotator's labels.
    others = pending.exclude(annotator_id=careless).count()
    response = client.post(url, {"annotator": str(careless)})
    assert (
        response.status_code == 302 and f"annotator={careless}" in response["Location"]
    )
    assert pending.filter(annotator_id=careless).count() == 0
    assert pending.exclude(annotator_id=careless).count() == others

    # A bad threshold is refused, changing nothing; annotators cannot bulk accept.
    Label.objects.filter(comparison__project=project).update(review_state="pending")
    response = client.post(url, {"min_gold_accuracy": "150"}, follow=True)
    assert "Bulk accept" in response.content.decode()
    assert not Label.objects.filter(review_state="accepted").exists()
    annotator = client_for(demo.annotators[0])
    assert annotator.post(url, {}).status_code == 403
    assert not Label.objects.filter(review_state="accepted").exists()


def test_bulk_accept_never_takes_the_reviewers_own_labels(
    demo: DemoProject, django_user_model: Any
) -> None:
    from labelapp.models import Membership

    project = demo.project
    own = Label.objects.filter(comparison__project=project, review_state="pending")
    me = own.first().annotator
    Membership.objects.filter(project=project, user=me).update(role="reviewer")
    client = client_for(me)
    client.post(reverse("frontend:review-bulk-accept", args=[project.pk]), {})
    assert own.filter(annotator=me).exists()  # still pending
    assert Label.objects.filter(review_state="accepted").exclude(annotator=me).exists()
