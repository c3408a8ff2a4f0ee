"""The score_comparisons job (labelapp.loop.selection) with a real tiny reward model,
what starts it, and the one validator of a project's selection strategy."""

from __future__ import annotations

import json

import pytest

from frontend.forms_projects import ProjectForm, StrategyField
from labelapp.datasets.importing import import_files
from labelapp.errors import ValidationFailed
from labelapp.jobs import Reporter
from labelapp.loop import reward, rounds, selection, triggers
from labelapp.loop.overview import reward_version_promoted
from labelapp.models import Comparison, Job, Project, text_hash
from labelapp.queue import assignment_skip, comparison_next_for
from labelapp.services.projects import project_settings_problems, project_update
from tests.labelapp.conftest import make_comparisons, make_user
from tests.training.conftest import BAD, FILLER, GOOD, save_tiny_base
from training.scoring import score
from training.selection import from_head_rewards, order_pool

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    base = save_tiny_base(tmp_path / "rb", "encoder")
    project = Project.objects.create(
        name="selection-unit",
        reward_base_ref=str(base),
        selection_strategy="disagreement",
        rm_config={
            "num_epochs": 1,
            "batch_size": 4,
            "max_length": 32,
            "eval_fraction": 0.4,
            "ensemble_heads": 3,
        },
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"what about cats {i} ?",
                    "chosen": "good",
                    "rejected": "bad",
                }
            )
            + "\n"
            for i in range(20)
        )
    )
    import_files(project=project, paths=[pairs])
    return project


def run(job: Job, service):
    Job.objects.filter(pk=job.pk).update(status="running", worker="t", attempts=1)
    job.refresh_from_db()
    result = service(job, Reporter(job.pk, "t"))
    Job.objects.filter(pk=job.pk).update(status="succeeded")
    return result


def _open_pairs(project, n: int) -> list[Comparison]:
    """n open comparisons whose responses use the tiny tokenizer's words (others
    are all one unknown token, so every pair would look the same)."""
    made = make_comparisons(project, n, start=100)
    for i, c in enumerate(made):
        for r, words in ((c.response_a, GOOD), (c.response_b, BAD)):
            r.text = f"{words[i % 5]} {FILLER[i]} {FILLER[i + 7]} {words[(i + 2) % 5]}"
            r.text_hash = text_hash(r.text)
            r.save(update_fields=["text", "text_hash"])
    return made


def _train(project) -> None:
    run(Job.objects.create(project=project, kind="train_rm"), reward.reward_model_train)


def test_a_promotion_starts_scoring_and_the_job_orders_the_queue(project):
    open_ = _open_pairs(project, 6)
    _train(project)
    # The promotion enqueued the scoring job (the strategy is not random).
    job = Job.objects.get(kind=Job.Kind.SCORE_COMPARISONS)
    assert job.status == "pending"
    result = run(job, selection.comparisons_score)
    assert result["reward_version"] == 1 and result["heads"] == 3
    assert result["strategy"] == "disagreement" and result["comparisons"] == 6
    job.refresh_from_db()
    scores = dict(
        Comparison.objects.filter(pk__in=[c.pk for c in open_]).values_list(
            "pk", "selection_score"
        )
    )
    assert sorted(scores.values()) == [i / 6 for i in range(1, 7)]
    # The order is the heads' disagreement, scored here independently.
    pool = selection.selection_pool(project)
    heads: list = []
    items = [(conv, text) for _id, conv, a, b in pool for text in (a, b)]
    path = reward_version_promoted(project).artifact_path
    score(path, items, per_head=heads)
    candidates = [
        from_head_rewards(str(cid), heads[2 * i], heads[2 * i + 1])
        for i, (cid, *_rest) in enumerate(pool)
    ]
    assert any(c.diff_var > 0 for c in candidates)  # three different heads
    expected = [int(candidates[i].id) for i in order_pool(candidates, "disagreement")]
    user = make_user(project=project)
    served = []
    for _ in range(6):
        a = comparison_next_for(annotator=user, project=project)
        served.append(a.comparison_id)
        assignment_skip(assignment_id=a.pk, annotator=user)
    assert served == expected


def test_a_round_that_adds_comparisons_starts_scoring(project, tmp_path):
    policy = save_tiny_base(tmp_path / "pol", "decoder", chat_template=True)
    Project.objects.filter(pk=project.pk).update(
        policy_ref=str(policy), n_samples=3, max_new_tokens=4, round_prompt_limit=3
    )
    project.refresh_from_db()
    _train(project)
    Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS).update(status="succeeded")
    result = run(Job.objects.create(project=project, kind="round"), rounds.round_run)
    assert result["comparisons"] > 0 and result["selection_scoring"] == "started"
    assert Job.objects.filter(
        kind=Job.Kind.SCORE_COMPARISONS, status="pending"
    ).exists()


def test_random_strategy_starts_no_scoring(project):
    Project.objects.filter(pk=project.pk).update(selection_strategy="random")
    _train(project)
    assert not Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS).exists()


def test_on_demand_needs_a_promoted_model_unless_random(project):
    with pytest.raises(ValidationFailed, match="no promoted reward model"):
        triggers.scoring_start(project=project)
    Project.objects.filter(pk=project.pk).update(selection_strategy="random")
    project.refresh_from_db()
    job = triggers.scoring_start(project=project)  # clears any scores
    (c,) = make_comparisons(project, 1, start=50)
    Comparison.objects.filter(pk=c.pk).update(selection_score=0.5)
    assert run(job, selection.comparisons_score)["comparisons"] == 1
    assert Comparison.objects.get(pk=c.pk).selection_score is None


def test_a_change_of_strategy_clears_scores_and_rescores(project):
    admin = make_user(project=project, role="admin")
    _train(project)
    Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS).update(status="succeeded")
    (c,) = make_comparisons(project, 1, start=50)
    Comparison.objects.filter(pk=c.pk).update(selection_score=0.5)
    project_update(project=project, by=admin, changes={"selection_strategy": "gap"})
    assert Comparison.objects.get(pk=c.pk).selection_score is None
    assert Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS, status="pending").count()
    Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS).update(status="succeeded")
    project_update(project=project, by=admin, changes={"selection_strategy": "random"})
    assert not Job.objects.filter(
        kind=Job.Kind.SCORE_COMPARISONS, status="pending"
    ).exists()


@pytest.mark.parametrize(
    "value, problem",
    [
        ("nope", "Must be one of: random, uncertainty, disagreement, gap"),
        (3, "Must be a strategy"),
        ({"uncertainty": -1}, "the weight must be a number >= 0"),
        ({"bogus": 1}, "bogus: unknown strategy"),
        ({"gap": 0, "random": 0}, "must not all be 0"),
    ],
)
def test_the_strategy_is_checked_by_the_service_the_api_and_the_page(
    db, value, problem, api_client_for
):
    assert problem in " ".join(
        project_settings_problems({"selection_strategy": value})["selection_strategy"]
    )
    project = Project.objects.create(name="checked")
    admin = make_user(project=project, role="admin")
    response = api_client_for(admin).patch(
        f"/api/v1/projects/{project.pk}/", {"selection_strategy": value}, format="json"
    )
    assert response.status_code == 400
    assert problem in json.dumps(response.json())
    if isinstance(value, int):
        return  # typed on the page, 3 is the name "3": the first case's message
    typed = value if isinstance(value, str) else json.dumps(value)
    form = ProjectForm(data={"selection_strategy": typed}, instance=project)
    form.is_valid()
    assert problem in " ".join(form.errors.get("selection_strategy", []))


@pytest.mark.parametrize(
    "typed, stored",
    [
        ("uncertainty", "uncertainty"),
        ('{"gap": 1, "random": 1}', {"gap": 1, "random": 1}),
    ],
)
def test_the_page_takes_a_name_or_a_json_mix(db, typed, stored):
    assert StrategyField().clean(typed) == stored
    assert project_settings_problems({"selection_strategy": stored}) == {}


def test_admins_start_scoring_through_the_api(project, api_client_for):
    admin = make_user(project=project, role="admin")
    annotator = make_user(project=project)
    url = f"/api/v1/projects/{project.pk}/score-comparisons/"
    refused = api_client_for(admin).post(url)
    assert refused.status_code == 400
    assert "no promoted reward model" in json.dumps(refused.json())
    _train(project)  # the promotion started one: finish it
    Job.objects.filter(kind=Job.Kind.SCORE_COMPARISONS).update(status="succeeded")
    assert api_client_for(annotator).post(url).status_code in (403, 404)
    started = api_client_for(admin).post(url)
    assert started.status_code == 202 and started.json()["kind"] == "score_comparisons"
