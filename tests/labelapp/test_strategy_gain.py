"""The strategy_gain job (labelapp.loop.strategy_gain): the project's own labels
replayed per selection strategy, what may start it, and the quality page's table."""

from __future__ import annotations

import random

import pytest
from django.urls import reverse

from labelapp.errors import ValidationFailed
from labelapp.loop import strategy_gain, triggers
from labelapp.models import Comparison, Job, Label, Project, text_hash
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.reviews import label_review
from tests.labelapp.conftest import make_comparisons, make_user
from tests.labelapp.test_selection_job import run

pytestmark = pytest.mark.django_db

GOOD = "Here is a careful, polite and correct answer that explains every step."
BAD = "no. whatever. figure it out yourself, idiot."


def labelled_project(n: int, *, seed: int = 0) -> tuple[Project, list]:
    """n comparisons of a good and a rude reply (sides mixed), each labelled by
    two annotators who prefer the good one; returns the project and annotators."""
    project = Project.objects.create(
        name=f"gain-{n}", overlap=2, selection_strategy="gap"
    )
    rng = random.Random(seed)
    made = make_comparisons(project, n, labels_required=2)
    good_side = {}
    for i, c in enumerate(made):
        good_first = rng.random() < 0.5
        for r, text in (
            (c.response_a, GOOD if good_first else BAD),
            (c.response_b, BAD if good_first else GOOD),
        ):
            r.text = f"{text} ({i})"
            r.text_hash = text_hash(r.text)
            r.save(update_fields=["text", "text_hash"])
        good_side[c.pk] = "a" if good_first else "b"
    annotators = [make_user(project=project) for _ in range(2)]
    for user in annotators:
        while (a := comparison_next_for(annotator=user, project=project)) is not None:
            side = good_side[a.comparison_id]
            if a.swapped:  # the choice is in display terms
                side = "b" if side == "a" else "a"
            label_submit(assignment_id=a.pk, annotator=user, choice=side, strength=2)
    return project, annotators


def test_labelled_answers_are_each_annotators_in_the_comparisons_orientation():
    project, (alice, _bob) = labelled_project(6)
    reviewer = make_user(project=project, role="reviewer")
    first = Comparison.objects.filter(project=project).order_by("id").first()
    rejected = Label.objects.filter(comparison=first, annotator=alice).get()
    label_review(label=rejected, reviewer=reviewer, state="rejected")
    pairs, answers = strategy_gain.labelled_answers(project)
    assert len(pairs) == 6 == strategy_gain.labelled_count(project)
    for pair, given in zip(pairs, answers, strict=True):
        good_is_a = pair.response_a.startswith("Here")
        expected = 1.0 if good_is_a else 0.0
        n = 1 if pair.id == f"comparison-{first.pk}" else 2  # the rejected one
        assert given == [expected] * n, pair.id
        assert (pair.p_a > 0.5) == good_is_a


def test_too_few_labels_is_refused_with_the_count(api_client_for):
    project, _ = labelled_project(5)
    with pytest.raises(ValidationFailed, match="has 5 human-labelled comparisons"):
        triggers.strategy_gain_start(project=project)
    admin = make_user(project=project, role="admin")
    response = api_client_for(admin).post(
        f"/api/v1/projects/{project.pk}/strategy-gain/"
    )
    assert response.status_code == 400 and "at least 60" in response.json()["detail"]
    assert not Job.objects.filter(kind=Job.Kind.STRATEGY_GAIN).exists()


@pytest.mark.slow
def test_the_job_replays_the_project_labels_and_the_quality_page_shows_it(client):
    project, _ = labelled_project(64)
    admin = make_user(project=project, role="admin")
    job = triggers.strategy_gain_start(project=project, created_by=admin)
    result = run(job, strategy_gain.strategy_gain_run)
    Job.objects.filter(pk=job.pk).update(result=result)
    assert result["strategy"] == "gap"
    assert result["pool"] + result["eval"] == 64 and result["eval"] >= 10
    assert result["budgets"][-1] == result["pool"]
    names = set(result["strategies"])
    assert {"random", "uncertainty", "disagreement", "gap", "mix"} == names
    for row in result["strategies"].values():
        assert row["seeds"] == strategy_gain.SEEDS
        assert len(row["curve"]) == len(result["budgets"])
    # The planted signal (polite vs rude) is learnt from the replayed labels.
    final, _ci = result["strategies"]["random"]["curve"][-1]
    assert final > 0.9
    client.force_login(admin)
    page = client.get(reverse("frontend:quality", args=[project.pk]))
    html = page.content.decode()
    assert 'id="strategy-gain"' in html and f"job #{job.pk}" in html
    assert 'gap <span class="hint">(this project)</span>' in html


def test_the_quality_page_says_when_nothing_was_measured(client):
    project = Project.objects.create(name="unmeasured", selection_strategy="random")
    admin = make_user(project=project, role="admin")
    client.force_login(admin)
    html = client.get(reverse("frontend:quality", args=[project.pk])).content.decode()
    assert 'id="gain-none"' in html and "Measure strategy gain" in html


def test_the_jobs_page_button_starts_it_or_says_why_not(client):
    project, _ = labelled_project(3)
    admin = make_user(project=project, role="admin")
    client.force_login(admin)
    url = reverse("frontend:jobs-start", args=[project.pk, "gain"])
    response = client.post(url, follow=True)
    assert "has 3 human-labelled comparisons" in response.content.decode()
    assert not Job.objects.filter(kind=Job.Kind.STRATEGY_GAIN).exists()
