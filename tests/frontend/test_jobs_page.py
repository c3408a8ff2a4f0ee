"""The jobs page and the API to start jobs: who sees and who may start what."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from labelapp.models import Job, Membership, ModelVersion, Project, Round
from tests.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(django_user_model, project):
    made = {}
    for role in ("annotator2", "reviewer", "admin"):
        user = django_user_model.objects.create_user(username=role, password=PASSWORD)
        if role != "annotator2":
            Membership.objects.create(project=project, user=user, role=role)
        else:
            Membership.objects.create(project=project, user=user)
        made[role] = user
    made["outsider"] = django_user_model.objects.create_user(
        username="outsider", password=PASSWORD
    )
    return made


def client_for(client, user):
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize(
    "who, expected",
    [
        (None, 302),
        # A member without the role: 403, as on every reviewer page (one guard,
        # frontend.guards); only a project the user cannot see is a 404.
        ("annotator2", 403),
        ("outsider", 404),
        ("reviewer", 200),
        ("admin", 200),
    ],
)
def test_jobs_page_visibility(client, people, project, who, expected):
    c = client_for(client, people.get(who))
    assert c.get(reverse("frontend:jobs", args=[project.pk])).status_code == expected
    json_status = c.get(reverse("frontend:jobs-json", args=[project.pk])).status_code
    assert json_status == expected


def test_page_shows_jobs_versions_rounds_and_failed_error(client, people, project):
    Job.objects.create(
        project=project, kind=Job.Kind.TRAIN_RM, status="running", progress=0.42,
        message="epoch 1/2: step 30/71",
    )  # fmt: skip
    Job.objects.create(
        project=project, kind=Job.Kind.ROUND, status="failed",
        error="RuntimeError: sampler exploded", traceback_tail="Traceback ...",
    )  # fmt: skip
    ModelVersion.objects.create(
        project=project, version=1, base_ref="builtin:minilm-l6", status="rejected",
        status_reason="held-out accuracy 0.600 is worse", metrics={"eval": {"accuracy": 0.6}},
    )  # fmt: skip
    Round.objects.create(
        project=project, number=0, policy_ref="p", status="done",
        stats={"reward": {"mean": 0.25}, "duplicate_rate": 0.125,
               "heads_disagreement": {"heads": 3, "prompts": 8, "disagree": 3,
                                      "share": 0.375}},
    )  # fmt: skip
    page = client_for(client, people["admin"]).get(
        reverse("frontend:jobs", args=[project.pk])
    )
    html = page.content.decode()
    assert 'value="0.42"' in html and "epoch 1/2: step 30/71" in html
    assert "RuntimeError: sampler exploded" in html and "Retry" in html
    assert "held-out accuracy 0.600 is worse" in html and "0.600" in html
    assert "0.250" in html and "0.125" in html
    assert '<td class="num">0.38</td>' in html  # the heads' disagreement
    data = client.get(reverse("frontend:jobs-json", args=[project.pk])).json()
    assert {j["status"] for j in data["jobs"]} == {"running", "failed"}


def test_only_admins_start_jobs(
    client, people, project, django_capture_on_commit_callbacks
):
    url = reverse("frontend:jobs-start", args=[project.pk, "train"])
    assert client_for(client, people["reviewer"]).post(url).status_code == 403
    assert not Job.objects.exists()
    client.logout()
    c = client_for(client, people["admin"])
    with django_capture_on_commit_callbacks() as sent:
        response = c.post(url)
    assert response.status_code == 302 and len(sent) == 1
    job = Job.objects.get()
    assert (job.kind, job.status, job.created_by) == (
        "train_rm",
        "pending",
        people["admin"],
    )
    # A second start while one is active is refused with a message, not a 500.
    page = c.post(url, follow=True)
    assert "already pending" in page.content.decode()
    assert Job.objects.count() == 1


def test_retry_failed_job(client, people, project, django_capture_on_commit_callbacks):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND, status="failed")
    c = client_for(client, people["admin"])
    with django_capture_on_commit_callbacks() as sent:
        c.post(reverse("frontend:jobs-retry", args=[project.pk, job.pk]))
    job.refresh_from_db()
    assert job.status == "pending" and len(sent) == 1


@pytest.mark.parametrize(
    "who, expected",
    [
        (None, 403),
        ("annotator2", 403),
        ("outsider", 404),
        ("reviewer", 403),
        ("admin", 202),
    ],
)
def test_api_start_training_and_round(
    people, project, who, expected, django_capture_on_commit_callbacks
):
    api = APIClient()
    if people.get(who):
        api.force_authenticate(people[who])
    for action, kind in (("train", "train_rm"), ("round", "round")):
        with django_capture_on_commit_callbacks():
            response = api.post(f"/api/v1/projects/{project.pk}/{action}/")
        assert response.status_code == expected, response.content
        if expected == 202:
            assert response.json()["kind"] == kind
            again = api.post(f"/api/v1/projects/{project.pk}/{action}/")
            assert again.status_code == 409
    expected_jobs = 2 if expected == 202 else 0
    assert Job.objects.filter(project=project).count() == expected_jobs


def test_api_retry(people, project):
    job = Job.objects.create(project=project, kind=Job.Kind.ROUND, status="failed")
    api = APIClient()
    api.force_authenticate(people["reviewer"])
    assert api.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 403
    api.force_authenticate(people["admin"])
    assert api.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 202
    assert api.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 409


def test_other_project_admin_cannot_start(people, django_user_model):
    other = Project.objects.create(name="other")
    api = APIClient()
    api.force_authenticate(people["admin"])
    assert api.post(f"/api/v1/projects/{other.pk}/train/").status_code == 404


def test_retry_says_it_starts_a_fresh_budget(client, people, project, settings):
    settings.PAIRLOOP_JOB_MAX_ATTEMPTS = 3
    job = Job.objects.create(
        project=project, kind=Job.Kind.ROUND, status="failed", attempts=3,
        error="worker w stopped responding after 3 attempts",
    )  # fmt: skip
    c = client_for(client, people["admin"])
    html = c.get(reverse("frontend:jobs", args=[project.pk])).content.decode()
    assert "a fresh budget of 3 attempts" in html
    page = c.post(
        reverse("frontend:jobs-retry", args=[project.pk, job.pk]), follow=True
    )
    assert "queued again with a fresh budget of 3 attempts" in page.content.decode()
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("pending", 0)


def test_jobs_json_reads_only_jobs(client, people, project):
    Job.objects.create(project=project, kind=Job.Kind.TRAIN_RM, status="running")
    c = client_for(client, people["reviewer"])
    with CaptureQueriesContext(connection) as queries:
        data = c.get(reverse("frontend:jobs-json", args=[project.pk])).json()
    assert [j["status"] for j in data["jobs"]] == ["running"]
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "labelapp_round" not in tables and "labelapp_modelversion" not in tables
    assert "labelapp_comparison" not in tables


def test_page_lists_policy_versions_and_starts_policy_training(
    client, people, project, django_capture_on_commit_callbacks
):
    v1 = ModelVersion.objects.create(
        project=project, kind="policy", version=1, base_ref="p", status="promoted",
        status_reason="human audit agrees: win rate 0.750",
        metrics={
            "n_sft": 12, "n_dpo": 3,
            "eval": {"win": {"win_rate": 0.6875, "ci_low": 0.51, "ci_high": 0.82},
                     "reward_gain": 0.4321, "kl": 0.1234, "length_ratio": 1.07,
                     "distinct_2_ratio": 0.96, "candidate_truncation_rate": 0.05},
            "audit": {"pending": False, "comparisons": [{}] * 8,
                      "human": {"rate": 0.75, "ci_low": 0.41, "ci_high": 0.93}},
        },
    )  # fmt: skip
    ModelVersion.objects.create(
        project=project, kind="policy", version=2, base_ref="p", status="ready",
        parent=v1, status_reason="RM gate passed; awaiting the human audit",
        metrics={"eval": {"win": {"win_rate": 0.7}},
                 "audit": {"pending": True, "comparisons": [{}] * 4}},
    )  # fmt: skip
    Round.objects.create(
        project=project, number=3, policy_ref="x", policy_version=v1, status="done"
    )
    c = client_for(client, people["admin"])
    html = c.get(reverse("frontend:jobs", args=[project.pk])).content.decode()
    section = html[html.index('id="policy-table"') : html.index('id="rounds-h"')]
    for text in ("0.688", "(0.51–0.82)", "0.750", "(0.41–0.93)", "0.432", "0.123",
                 "1.07", "0.96", "12 / 3", "human audit agrees",
                 "awaiting 4 audit pairs", "from v1"):  # fmt: skip
        assert text in section, text
    assert "<td>v1</td>" in html[html.index('id="rounds-h"') :]
    # The per-version plot sits under the table and draws these versions.
    plot_url = reverse("frontend:plot", args=[project.pk, "policy"])
    assert 'id="policy-plot"' in section and plot_url in section
    svg = c.get(plot_url)
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert b"no data yet" not in svg.content
    with django_capture_on_commit_callbacks() as sent:
        response = c.post(reverse("frontend:jobs-start", args=[project.pk, "policy"]))
    assert response.status_code == 302 and len(sent) == 1
    assert Job.objects.get().kind == "train_policy"
    client.logout()
    reviewer = client_for(client, people["reviewer"])
    url = reverse("frontend:jobs-start", args=[project.pk, "policy"])
    assert reviewer.post(url).status_code == 403


def test_jobs_show_start_finish_duration_and_filter_by_kind(client, people, project):
    from datetime import timedelta

    from django.utils import timezone

    start = timezone.now() - timedelta(minutes=5)
    Job.objects.create(
        project=project, kind="train_rm", status="succeeded",
        started_at=start, finished_at=start + timedelta(seconds=83.4),
    )  # fmt: skip
    Job.objects.create(project=project, kind="export", status="succeeded")
    c = client_for(client, people["reviewer"])
    url = reverse("frontend:jobs", args=[project.pk])
    html = c.get(url).content.decode()
    table = html[html.index('id="jobs-table"') : html.index('id="versions-h"')]
    assert '<th scope="col">Started</th>' in table and "83.4 s" in table
    assert start.isoformat()[:19] in table
    assert "Reward-model training" in table and "Export" in table
    only = c.get(url, {"kind": "train_rm"}).content.decode()
    table = only[only.index('id="jobs-table"') : only.index('id="versions-h"')]
    assert "Reward-model training" in table and ">Export<" not in table
    assert 'jobs.json?kind=train_rm"' in only or '?kind=train_rm"' in only
    data = c.get(reverse("frontend:jobs-json", args=[project.pk]), {"kind": "export"})
    assert [j["kind"] for j in data.json()["jobs"]] == ["export"]
    assert data.json()["jobs"][0]["duration_s"] is None
    bad = c.get(url, {"kind": "nope"})
    assert bad.status_code == 400 and "unknown job kind 'nope'" in bad.content.decode()
    bad_json = c.get(reverse("frontend:jobs-json", args=[project.pk]), {"kind": "x"})
    assert (
        bad_json.status_code == 400 and "known: train_rm" in bad_json.json()["detail"]
    )


def test_the_scoring_job_and_the_queue_order_are_shown_and_started(
    client, people, project, django_capture_on_commit_callbacks
):
    """Issue 17: the jobs page shows the score_comparisons job with its progress,
    the project's selection strategy and how much of the queue is scored, and lets
    an admin start scoring (refused, saying why, without a promoted model)."""
    from django.utils import timezone

    from labelapp.models import Comparison
    from tests.labelapp.conftest import make_comparisons

    make_comparisons(project, 3, start=500)
    Project.objects.filter(pk=project.pk).update(
        selection_strategy={"uncertainty": 0.5, "random": 0.5}
    )
    open_ = Comparison.objects.filter(project=project, status="open", is_gold=False)
    scored = list(open_.values_list("pk", flat=True)[:1])
    Comparison.objects.filter(pk__in=scored).update(selection_score=0.9)
    Job.objects.create(
        project=project, kind=Job.Kind.SCORE_COMPARISONS, status="succeeded",
        finished_at=timezone.now(), result={"reward_version": 2, "heads": 3},
    )  # fmt: skip
    running = Job.objects.create(
        project=project, kind=Job.Kind.SCORE_COMPARISONS, status="running",
        progress=0.37, message="scored 120/300 responses",
    )  # fmt: skip
    c = client_for(client, people["admin"])
    html = c.get(reverse("frontend:jobs", args=[project.pk])).content.decode()
    assert "Selection scoring" in html and "scored 120/300 responses" in html
    assert "random 0.5 · uncertainty 0.5" in html  # (jsonb orders the keys)
    assert f"1 of {open_.count()} open comparisons scored" in html
    assert "reward model v2 (3 heads)" in html
    assert "Score comparisons now" in html
    polled = c.get(reverse("frontend:jobs-json", args=[project.pk])).json()
    assert {"kind": "score_comparisons", "progress": 0.37}.items() <= next(
        j for j in polled["jobs"] if j["id"] == running.pk
    ).items()
    running.delete()
    url = reverse("frontend:jobs-start", args=[project.pk, "score"])
    page = c.post(url, follow=True).content.decode()
    assert "no promoted reward model" in page
    ModelVersion.objects.create(
        project=project, version=1, base_ref="b", status="promoted"
    )
    with django_capture_on_commit_callbacks() as sent:
        assert c.post(url).status_code == 302
    assert len(sent) == 1
    assert Job.objects.filter(kind="score_comparisons", status="pending").count() == 1
    client.logout()
    reviewer = client_for(client, people["reviewer"])
    assert reviewer.post(url).status_code == 403
