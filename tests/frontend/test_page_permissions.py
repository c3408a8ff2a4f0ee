"""Every guarded page x every kind of user, through the one page decorator
(frontend.guards.project_page on labelapp.access): a project the user cannot see is
a 404, a page their role does not open a 403, anonymous users go to the login page
(the compare page's JSON endpoint answers 401)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from labelapp.models import Job
from labelapp.queue import comparison_next_for, label_submit
from labelapp.services.rankings import ranking_submit
from tests.frontend.conftest import client_for
from tests.labelapp.api.test_rankings_api import make_item
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db

KINDS = ["anonymous", "non_member", "annotator", "reviewer", "admin", "staff"]


@pytest.fixture
def world() -> dict[str, Any]:
    project = make_project(overlap=2)
    other = make_project()
    c1, _c2 = make_comparisons(project, 2)
    users = {
        "anonymous": None,
        "non_member": make_user(project=other, role="admin"),
        "annotator": make_user(project=project),
        "reviewer": make_user(project=project, role="reviewer"),
        "admin": make_user(project=project, role="admin"),
        # Django staff, not a superuser and not a member: the issue 13 case.
        "staff": make_user(staff=True, superuser=False),
    }
    colleague = make_user(project=project)
    lease = comparison_next_for(annotator=colleague, project=project)
    label, _ = label_submit(
        assignment_id=lease.pk, annotator=colleague, choice="a", strength=2
    )
    failed = Job.objects.create(project=project, kind=Job.Kind.ROUND, status="failed")
    item = make_item(project)
    ranking = ranking_submit(
        item=item, annotator=colleague, tiers=[[item.response_ids[0]]]
    )
    ids = {
        "ranking_id": ranking.pk,
        "project_id": project.pk,
        "label_id": label.pk,
        "comparison_id": c1.pk,
        "job_id": failed.pk,
    }
    return {"users": users, "ids": ids}


def row(*codes: int) -> dict[str, int]:
    return dict(zip(KINDS, codes, strict=True))


LOGIN = 302  # the anonymous redirect; the test checks it goes to the login page
# (method, url name, extra url kwargs, POST data, status per kind)
PAGES = {
    "compare": ("get", "compare", {}, None, row(LOGIN, 404, 200, 200, 200, 403)),
    "compare-next": ("post", "compare-next", {}, {}, row(401, 404, 200, 200, 200, 403)),
    "rank": ("get", "rank", {}, None, row(LOGIN, 404, 200, 200, 200, 403)),
    "rank-next": ("post", "rank-next", {}, {}, row(401, 404, 200, 200, 200, 403)),
    "review": ("get", "review", {}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "review-label": ("post", "review-label", {"label_id": None}, {"state": "accepted"}, row(LOGIN, 404, 403, 302, 302, 302)),
    "review-bulk-accept": ("post", "review-bulk-accept", {}, {}, row(LOGIN, 404, 403, 302, 302, 302)),
    "review-gold": ("post", "review-gold", {"comparison_id": None}, {"gold_choice": "a"}, row(LOGIN, 404, 403, 403, 302, 302)),
    "quality": ("get", "quality", {}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "pause-flagged": ("post", "quality-pause-flagged", {}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "plot": ("get", "plot", {"name": "agreement"}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "exports": ("get", "exports", {}, None, row(LOGIN, 404, 403, 403, 200, 200)),
    "export-download": ("get", "export-download", {"job_id": None, "filename": "README.md"}, None, row(LOGIN, 404, 403, 403, 404, 404)),
    "jobs": ("get", "jobs", {}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "jobs-json": ("get", "jobs-json", {}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "jobs-start": ("post", "jobs-start", {"kind": "train"}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "jobs-retry": ("post", "jobs-retry", {"job_id": None}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "jobs-start-policy": ("post", "jobs-start", {"kind": "policy"}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "jobs-start-gain": ("post", "jobs-start", {"kind": "gain"}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "policy-download": ("get", "policy-download", {"version": 1}, None, row(LOGIN, 404, 403, 403, 404, 404)),
    "review-label-note": ("post", "review-label-note", {"label_id": None}, {"body": "Why A?"}, row(LOGIN, 404, 403, 302, 302, 302)),
    "my-notes": ("get", "my-notes", {}, None, row(LOGIN, 404, 200, 200, 200, 403)),
    "my-notes-reply": ("post", "my-notes-reply", {"label_id": None}, {"body": "ok"}, row(LOGIN, 404, 404, 404, 404, 403)),
    "compare-undo": ("post", "compare-undo", {}, {}, row(401, 404, 409, 409, 409, 403)),
    "my-labels": ("get", "my-labels", {}, None, row(LOGIN, 404, 200, 200, 200, 403)),
    "my-label-edit": ("post", "my-label-edit", {"label_id": None}, {"choice": "b", "strength": "1"}, row(LOGIN, 404, 404, 404, 404, 403)),
    "my-label-undo": ("post", "my-label-undo", {"label_id": None}, {}, row(LOGIN, 404, 404, 404, 404, 403)),
    "rank-review": ("get", "rank-review", {}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "rank-review-detail": ("get", "rank-review-detail", {"ranking_id": None}, None, row(LOGIN, 404, 403, 200, 200, 200)),
    "rank-review-decide": ("post", "rank-review-decide", {"ranking_id": None}, {"state": "accepted"}, row(LOGIN, 404, 403, 302, 302, 302)),
    "rank-review-gold": ("post", "rank-review-gold", {"ranking_id": None}, {"action": "mark"}, row(LOGIN, 404, 403, 403, 302, 302)),
}  # fmt: skip
# compare-undo: the members have no label of their own here, so nothing to undo
# (409); my-label-edit/undo: the label is a colleague's (404: own labels only).
# my-notes-reply: the label is a colleague's, so only its own annotator may answer
# (tests/frontend/test_notes_pages.py); staff are no member (403).
# export-download: the guard lets admins through to a job that is no export (404);
# policy-download likewise to a version that does not exist.


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_matrix(world, page, kind, django_capture_on_commit_callbacks):
    method, name, extra, data, expected = PAGES[page]
    kwargs = {"project_id": world["ids"]["project_id"]}
    kwargs.update({k: world["ids"][k] if v is None else v for k, v in extra.items()})
    client = client_for(world["users"][kind])
    url = reverse(f"frontend:{name}", kwargs=kwargs)
    with django_capture_on_commit_callbacks():  # started jobs are not sent
        if method == "post" and name == "compare-next":
            response = client.post(url, data, content_type="application/json")
        else:
            response = getattr(client, method)(url, data)
    assert response.status_code == expected[kind], (page, kind)
    if kind == "anonymous" and expected[kind] == LOGIN:
        assert reverse("frontend:login") in response["Location"]


def test_home_page_lists_every_project_for_staff(world):
    # Issue 15: a project made by import_data has no members; staff must see it.
    orphan = make_project(name="imported, no members")
    staff = client_for(world["users"]["staff"])
    page = staff.get(reverse("frontend:projects")).content.decode()
    assert "imported, no members" in page
    assert reverse("frontend:review", args=[orphan.pk]) in page
    assert reverse("frontend:exports", args=[orphan.pk]) in page
    # Staff are no member: no labelling link (the compare page would refuse them).
    assert reverse("frontend:compare", args=[orphan.pk]) not in page
    member = client_for(world["users"]["annotator"])
    member_page = member.get(reverse("frontend:projects")).content.decode()
    assert "imported, no members" not in member_page
    assert reverse("frontend:compare", args=[world["ids"]["project_id"]]) in (
        member_page
    )
