"""Every endpoint x every role, anonymous included. Objects a role may not see are
404 (not 403), so ids cannot be probed; lists only hold what the role may see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from labelapp.models import Job, ModelVersion, Response, Round, text_hash
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.notes import label_note_add
from labelapp.services.rankings import ranking_item_create, ranking_submit

from .conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db

# staff: is_staff and superuser (create_user's "admin"); staff_only: Django is_staff
# alone, the user the two old can_review rules disagreed on (issue 13).
ROLES = [
    "anonymous",
    "outsider",
    "annotator",
    "reviewer",
    "project_admin",
    "staff",
    "staff_only",
]


@dataclass
class World:
    users: dict
    ids: dict


@pytest.fixture
def world() -> World:
    project = make_project()
    other = make_project()
    c1, _c2 = make_comparisons(project, 2)
    (c_other,) = make_comparisons(other, 1)
    users = {
        "anonymous": None,
        "outsider": make_user(project=other),
        "annotator": make_user(project=project),
        "reviewer": make_user(project=project, role="reviewer"),
        "project_admin": make_user(project=project, role="admin"),
        "staff": make_user(staff=True),
        "staff_only": make_user(staff=True, superuser=False),
    }
    # Another annotator's label on c1, and the annotator's own lease.
    colleague = make_user(project=project)
    lease = comparison_next_for(annotator=colleague, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=colleague, choice="a", strength=2
    )
    own = comparison_next_for(annotator=users["annotator"], project=project)
    rnd = Round.objects.create(project=project, number=1, policy_ref="p")
    mv = ModelVersion.objects.create(project=project, version=1, base_ref="b")
    job = Job.objects.create(project=project, kind="export")
    failed = Job.objects.create(project=project, kind="round", status="failed")
    extra = Response.objects.create(
        prompt_id=c1.prompt_id, text="a third answer", text_hash=text_hash("x3")
    )
    ranking_item = ranking_item_create(
        project=project,
        prompt_id=c1.prompt_id,
        response_ids=[c1.response_a_id, c1.response_b_id, extra.pk],
    )
    other_ranking_item = ranking_item_create(
        project=other,
        prompt_id=c_other.prompt_id,
        response_ids=[c_other.response_a_id, c_other.response_b_id],
    )
    note = label_note_add(label=label, author=users["reviewer"], body="Why A?")
    # The colleague's top-1 ranking: A over B (which they labelled pairwise: that
    # label stands) and A over extra (a new implied label and comparison); B and
    # extra stay unordered, so comparison-create can still make that pair.
    ranking = ranking_submit(
        item=ranking_item, annotator=colleague, tiers=[[c1.response_a_id]]
    )
    ids = {
        "note": note.pk,
        "ranking_item": ranking_item.pk,
        "ranking": ranking.pk,
        "other_ranking_item": other_ranking_item.pk,
        "project": project.pk,
        "other_project": other.pk,
        "comparison": label.comparison_id,
        "other_comparison": c_other.pk,
        "response": c1.response_a_id,
        "prompt": c1.prompt_id,
        "label": label.pk,
        "own_assignment": own.pk,
        "colleague_assignment": lease.pk,
        "round": rnd.pk,
        "model_version": mv.pk,
        "job": job.pk,
        "failed_job": failed.pk,
        "extra_response": extra.pk,
        "response_b": c1.response_b_id,
    }
    users["colleague"] = colleague
    return World(users, ids)


def row(*codes: int) -> dict[str, int]:
    return dict(zip(ROLES, codes, strict=True))


# (method, url template, body, expected status per role)
CASES = {
    "me": ("get", "/api/v1/me/", None, row(403, 200, 200, 200, 200, 200, 200)),
    "projects-list": ("get", "/api/v1/projects/", None, row(403, 200, 200, 200, 200, 200, 200)),
    "project-detail": ("get", "/api/v1/projects/{project}/", None, row(403, 404, 200, 200, 200, 200, 200)),
    "project-create": ("post", "/api/v1/projects/", {"name": "new"}, row(403, 403, 403, 403, 403, 201, 201)),
    "project-patch": ("patch", "/api/v1/projects/{project}/", {"guidelines": "x"}, row(403, 404, 403, 403, 200, 200, 200)),
    "project-delete": ("delete", "/api/v1/projects/{other_project}/", None, row(403, 403, 403, 403, 403, 204, 204)),
    "next": ("post", "/api/v1/projects/{project}/next/", None, row(403, 404, 200, 200, 200, 404, 404)),
    "progress": ("get", "/api/v1/projects/{project}/progress/", None, row(403, 404, 200, 200, 200, 200, 200)),
    "prompt-detail": ("get", "/api/v1/prompts/{prompt}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "prompt-create": ("post", "/api/v1/prompts/", {"project": "{project}", "messages": [{"role": "user", "content": "q"}]}, row(403, 403, 403, 403, 201, 201, 201)),
    "response-detail": ("get", "/api/v1/responses/{response}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "comparison-detail": ("get", "/api/v1/comparisons/{comparison}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "other-comparison": ("get", "/api/v1/comparisons/{other_comparison}/", None, row(403, 404, 404, 404, 404, 200, 200)),
    "comparison-patch": ("patch", "/api/v1/comparisons/{comparison}/", {"priority": 3}, row(403, 403, 403, 403, 200, 200, 200)),
    "label-detail": ("get", "/api/v1/labels/{label}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "label-review": ("post", "/api/v1/labels/{label}/review/", {"state": "accepted"}, row(403, 404, 404, 200, 200, 200, 200)),
    "label-undo-others": ("post", "/api/v1/labels/{label}/undo/", None, row(403, 404, 404, 403, 403, 403, 403)),
    "label-edit-others": ("post", "/api/v1/labels/{label}/edit/", {"choice": "b", "strength": 1}, row(403, 404, 404, 403, 403, 403, 403)),
    "skip-own-with-reason": ("post", "/api/v1/assignments/{own_assignment}/skip/", {"reason": "Prompt unclear"}, row(403, 404, 200, 404, 404, 404, 404)),
    "own-assignment": ("get", "/api/v1/assignments/{own_assignment}/", None, row(403, 404, 200, 404, 404, 200, 200)),
    "label-others-assignment": ("post", "/api/v1/assignments/{own_assignment}/label/", {"choice": "a", "strength": 1}, row(403, 404, 201, 404, 404, 404, 404)),
    "skip-others-assignment": ("post", "/api/v1/assignments/{colleague_assignment}/skip/", None, row(403, 404, 404, 404, 404, 404, 404)),
    "round-detail": ("get", "/api/v1/rounds/{round}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "model-version-detail": ("get", "/api/v1/model-versions/{model_version}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "job-detail": ("get", "/api/v1/jobs/{job}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "train": ("post", "/api/v1/projects/{project}/train/", None, row(403, 404, 403, 403, 202, 202, 202)),
    "round": ("post", "/api/v1/projects/{project}/round/", None, row(403, 404, 403, 403, 202, 202, 202)),
    "train_policy": ("post", "/api/v1/projects/{project}/train-policy/", None, row(403, 404, 403, 403, 202, 202, 202)),
    "strategy-gain": ("post", "/api/v1/projects/{project}/strategy-gain/", None, row(403, 404, 403, 403, 400, 400, 400)),
    "job-retry": ("post", "/api/v1/jobs/{failed_job}/retry/", None, row(403, 404, 404, 403, 202, 202, 202)),
    "response-create": ("post", "/api/v1/responses/", {"prompt": "{prompt}", "text": "new"}, row(403, 403, 403, 403, 201, 201, 201)),
    "comparison-create": ("post", "/api/v1/comparisons/", {"project": "{project}", "response_a": "{extra_response}", "response_b": "{response_b}"}, row(403, 403, 403, 403, 201, 201, 201)),
    "ranking-next": ("post", "/api/v1/projects/{project}/ranking-next/", None, row(403, 404, 200, 200, 200, 404, 404)),
    # Both nexts write a lease: POST only, a GET leases nothing (405).
    "next-get": ("get", "/api/v1/projects/{project}/next/", None, row(403, 405, 405, 405, 405, 405, 405)),
    "ranking-next-get": ("get", "/api/v1/projects/{project}/ranking-next/", None, row(403, 405, 405, 405, 405, 405, 405)),
    "ranking-item-detail": ("get", "/api/v1/ranking-items/{ranking_item}/", None, row(403, 404, 200, 200, 200, 200, 200)),
    "other-ranking-item": ("get", "/api/v1/ranking-items/{other_ranking_item}/", None, row(403, 200, 404, 404, 404, 200, 200)),
    "ranking-item-rank": ("post", "/api/v1/ranking-items/{ranking_item}/rank/", {"tiers": [[2], [0]]}, row(403, 404, 201, 201, 201, 404, 404)),
    "rank-other-ranking-item": ("post", "/api/v1/ranking-items/{other_ranking_item}/rank/", {"tiers": [[1]]}, row(403, 201, 404, 404, 404, 404, 404)),
    "ranking-item-skip": ("post", "/api/v1/ranking-items/{ranking_item}/skip/", {"reason": "unclear"}, row(403, 404, 200, 200, 200, 404, 404)),
    "ranking-item-gold": ("post", "/api/v1/ranking-items/{ranking_item}/gold/", {"tiers": [["{response}"], ["{response_b}"]]}, row(403, 404, 403, 403, 200, 200, 200)),
    "ranking-item-gold-off": ("post", "/api/v1/ranking-items/{ranking_item}/gold/", {"tiers": None}, row(403, 404, 403, 403, 200, 200, 200)),
    "rankings-list": ("get", "/api/v1/rankings/", None, row(403, 200, 200, 200, 200, 200, 200)),
    "ranking-detail": ("get", "/api/v1/rankings/{ranking}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "ranking-review": ("post", "/api/v1/rankings/{ranking}/review/", {"state": "rejected", "note": "Order ignores the prompt."}, row(403, 404, 404, 200, 200, 200, 200)),
    "label-notes-list": ("get", "/api/v1/label-notes/", None, row(403, 200, 200, 200, 200, 200, 200)),
    "label-note-detail": ("get", "/api/v1/label-notes/{note}/", None, row(403, 404, 404, 200, 200, 200, 200)),
    "label-note-create": ("post", "/api/v1/label-notes/", {"label": "{label}", "body": "See rule 2."}, row(403, 404, 404, 201, 201, 201, 201)),
    "label-notes-read": ("post", "/api/v1/label-notes/read/", {}, row(403, 200, 200, 200, 200, 200, 200)),
}  # fmt: skip
# Undo and edit are the label's annotator's alone: whoever may see someone else's
# label (reviewers, admins, staff) is refused (403), the rest cannot see it (404).
# Less obvious cells: staff are not project members, so they get no queue (404);
# reviewers and admins label too (they are members); the outsider annotates another
# project and sees nothing of this one. Ranking is labelling: staff see a ranking
# item but rank only where they are members.


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        filled = {k: _fill(v, ids) for k, v in value.items()}
        ints = ("project", "prompt", "response_a", "response_b", "label")
        return {k: int(v) if k in ints else v for k, v in filled.items()}
    if isinstance(value, list):
        # An id in a list (gold tiers of response ids) is a number.
        return [
            int(_fill(v, ids))
            if isinstance(v, str) and v.startswith("{")
            else _fill(v, ids)
            for v in value
        ]
    return value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_permission_matrix(world, api_client_for, role, case):
    method, url, body, expected = CASES[case]
    client = api_client_for(world.users[role])
    resp = getattr(client, method)(
        _fill(url, world.ids), _fill(body, world.ids), format="json"
    )
    assert resp.status_code == expected[role], (case, role, resp.content[:200])


# Rows each role sees in list endpoints (project has 2 comparisons, 1 more implied
# by the colleague's ranking, 5 responses and 2 jobs; other has 1 comparison).
LIST_COUNTS = {
    "/api/v1/comparisons/": row(0, 0, 0, 3, 3, 4, 4),
    "/api/v1/responses/": row(0, 0, 0, 5, 5, 7, 7),
    "/api/v1/labels/": row(0, 0, 0, 2, 2, 2, 2),
    # Rankings are for reviewers: annotators see none, not even their own.
    "/api/v1/rankings/": row(0, 0, 0, 1, 1, 1, 1),
    "/api/v1/assignments/": row(0, 0, 1, 0, 0, 2, 2),
    "/api/v1/projects/": row(0, 1, 1, 1, 1, 2, 2),
    "/api/v1/jobs/": row(0, 0, 0, 2, 2, 2, 2),
    # The note is on a colleague's label: other annotators never see it.
    "/api/v1/label-notes/": row(0, 0, 0, 1, 1, 1, 1),
}


@pytest.mark.parametrize("role", ROLES[1:])
@pytest.mark.parametrize("path", sorted(LIST_COUNTS))
def test_list_visibility(world, api_client_for, role, path):
    resp = api_client_for(world.users[role]).get(path)
    assert resp.status_code == 200
    assert len(resp.json()["results"]) == LIST_COUNTS[path][role]


def test_annotator_never_sees_scores_gold_or_others(world, api_client_for):
    client = api_client_for(world.users["annotator"])
    body = client.post(f"/api/v1/projects/{world.ids['project']}/next/").json()
    text = str(body)
    for secret in ("reward", "gold", "p_a", "majority", "labels_count"):
        assert secret not in text
    assert client.get("/api/v1/labels/").json()["results"] == []
    ranked = client.post(f"/api/v1/projects/{world.ids['project']}/ranking-next/")
    assert ranked.status_code == 200
    for secret in ("reward", "gold", "p_a", "labels_count", "labels_required"):
        assert secret not in str(ranked.json())


def test_label_notes_are_the_labels_annotators_too(world, api_client_for):
    """The colleague wrote the label: they read the reviewer's note, see it as
    unread until they mark it, and answer in the thread."""
    client = api_client_for(world.users["colleague"])
    unread = client.get("/api/v1/label-notes/?unread=1").json()["results"]
    assert [n["id"] for n in unread] == [world.ids["note"]]
    assert unread[0]["body"] == "Why A?" and unread[0]["read_at"] is None
    answer = client.post(
        "/api/v1/label-notes/",
        {"label": world.ids["label"], "body": "It follows the prompt."},
        format="json",
    )
    assert answer.status_code == 201 and answer.json()["read_at"] is not None
    marked = client.post("/api/v1/label-notes/read/", {}, format="json").json()
    assert marked == {"marked": 1}
    assert client.get("/api/v1/label-notes/?unread=1").json()["results"] == []
    assert len(client.get("/api/v1/label-notes/").json()["results"]) == 2
