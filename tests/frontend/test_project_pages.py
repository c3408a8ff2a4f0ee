"""The project settings, members, invite and upload pages (issue 18): the permission
matrix over every new page and endpoint, and what each page does with good and bad
input (server side; the browser flows are in test_project_browser.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labelapp.models import Comparison, Invite, Membership, Project, Prompt
from labelapp.services.members import invite_create
from labelapp.services.uploads import upload_stage
from tests.frontend.conftest import client_for
from tests.frontend.xss_corpus import XSS_PAYLOADS
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db

KINDS = ["anonymous", "non_member", "annotator", "reviewer", "admin", "staff"]
LOGIN = 302


def row(*codes: int) -> dict[str, int]:
    return dict(zip(KINDS, codes, strict=True))


def settings_data(project: Project, **changes: Any) -> dict[str, Any]:
    """The settings form as the page posts it: every field, as text."""
    from frontend.forms_projects import ProjectForm

    form = ProjectForm(instance=project)
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name in ("pair_mix", "rm_config", "sampler_config"):
            value = json.dumps(value)
        if name == "selection_strategy":
            value = field.prepare_value(value)  # a name, or a mix as JSON
        data[name] = value
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


@pytest.fixture
def world(settings, tmp_path) -> dict[str, Any]:
    settings.ARTIFACTS_DIR = tmp_path
    project = make_project(overlap=2)
    other = make_project()
    users = {
        "anonymous": None,
        "non_member": make_user(project=other, role="admin"),
        "annotator": make_user(project=project),
        "reviewer": make_user(project=project, role="reviewer"),
        "admin": make_user(project=project, role="admin"),
        "staff": make_user(staff=True, superuser=False),
    }
    colleague = make_user(project=project)
    make_user("newcomer")
    invite, token = invite_create(project=project, by=users["admin"], role="annotator")
    staging = upload_stage(
        project=project,
        by=users["admin"],
        files=[SimpleUploadedFile("a.jsonl", b'{"prompt": "hello"}\n')],
    )
    ids = {
        "project_id": project.pk,
        "membership_id": Membership.objects.get(user=colleague).pk,
        "invite_id": invite.pk,
        "staging_id": staging,
        "token": token,
    }
    return {"project": project, "users": users, "ids": ids}


# (method, url name, url kwargs beyond project_id, POST data, status per kind)
PAGES: dict[str, tuple[str, str, dict, Any, dict[str, int]]] = {
    "settings": ("get", "project-settings", {}, None, row(LOGIN, 404, 403, 403, 200, 200)),
    "settings-post": ("post", "project-settings", {}, "settings", row(LOGIN, 404, 403, 403, 302, 302)),
    "members": ("get", "members", {}, None, row(LOGIN, 404, 403, 403, 200, 200)),
    "member-add": ("post", "member-add", {}, {"username": "newcomer", "role": "annotator"}, row(LOGIN, 404, 403, 403, 302, 302)),
    "member-role": ("post", "member-role", {"membership_id": None}, {"role": "reviewer"}, row(LOGIN, 404, 403, 403, 302, 302)),
    "member-remove": ("post", "member-remove", {"membership_id": None}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "invite-new": ("post", "invite-new", {}, {"role": "annotator", "days": 3}, row(LOGIN, 404, 403, 403, 200, 200)),
    "invite-revoke": ("post", "invite-revoke", {"invite_id": None}, {}, row(LOGIN, 404, 403, 403, 302, 302)),
    "upload": ("get", "upload", {}, None, row(LOGIN, 404, 403, 403, 200, 200)),
    "upload-post": ("post", "upload", {}, {}, row(LOGIN, 404, 403, 403, 400, 400)),
    "upload-preview": ("get", "upload-preview", {"staging_id": None}, None, row(LOGIN, 404, 403, 403, 200, 200)),
    "upload-import": ("post", "upload-preview", {"staging_id": None}, {"action": "import"}, row(LOGIN, 404, 403, 403, 302, 302)),
}  # fmt: skip
# Not under a project: creating one (staff), the preview, the invite link.
GLOBAL = {
    "project-new": ("get", "project-new", {}, None, row(LOGIN, 403, 403, 403, 403, 200)),
    "project-new-post": ("post", "project-new", {}, "new", row(LOGIN, 403, 403, 403, 403, 302)),
    # Admins of any project preview guidelines (it reads nothing of a project).
    "markdown-preview": ("post", "markdown-preview", {}, {"text": "*hi*"}, row(LOGIN, 200, 403, 403, 200, 200)),
    # The token is the permission: anyone holding the link opens it.
    "invite": ("get", "invite", {"token": None}, None, row(200, 200, 200, 200, 200, 200)),
    "invite-bad": ("get", "invite", {"token": "nope"}, None, row(404, 404, 404, 404, 404, 404)),
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("page", sorted([*PAGES, *GLOBAL]))
def test_page_matrix(world, page, kind):
    method, name, extra, data, expected = {**PAGES, **GLOBAL}[page]
    kwargs = {} if page in GLOBAL else {"project_id": world["ids"]["project_id"]}
    kwargs.update({k: world["ids"][k] if v is None else v for k, v in extra.items()})
    if data == "settings":
        data = settings_data(world["project"])
    elif data == "new":
        data = settings_data(Project(), name="Fresh project")
    client = client_for(world["users"][kind])
    url = reverse(f"frontend:{name}", kwargs=kwargs)
    response = getattr(client, method)(url, data)
    assert response.status_code == expected[kind], (page, kind)
    if kind == "anonymous" and expected[kind] == LOGIN:
        assert reverse("frontend:login") in response["Location"]


def test_settings_errors_are_field_by_field_and_nothing_is_saved(world):
    client = client_for(world["users"]["admin"])
    url = reverse("frontend:project-settings", args=[world["project"].pk])
    data = settings_data(
        world["project"],
        overlap=0,
        top_p=0,
        pair_mix='{"bogus": 1}',
        rm_config='{"num_epochs": "x"}',
    )
    response = client.post(url, data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "greater than or equal to 1" in errors["overlap"][0]
    assert errors["top_p"] == ["Ensure this value is greater than 0."]
    assert "bogus: unknown strategy" in errors["pair_mix"][0]
    assert "num_epochs: must be a number" in errors["rm_config"][0]
    world["project"].refresh_from_db()
    assert world["project"].overlap == 2


def test_raising_k_asks_first_then_reopens_in_one_go(world):
    project = world["project"]
    done, _open = make_comparisons(project, 2)
    Comparison.objects.filter(pk=done.pk).update(status="complete", labels_count=2)
    client = client_for(world["users"]["admin"])
    url = reverse("frontend:project-settings", args=[project.pk])
    data = settings_data(project, overlap=3)
    first = client.post(url, data)
    assert first.status_code == 200
    assert "1 completed comparison will be reopened" in first.content.decode()
    project.refresh_from_db()
    assert project.overlap == 2  # nothing yet
    second = client.post(url, {**data, "confirm": "1"})
    assert second.status_code == 302
    project.refresh_from_db(), done.refresh_from_db()
    assert project.overlap == 3 and done.status == "open"


def test_staff_create_a_project(world):
    client = client_for(world["users"]["staff"])
    data = settings_data(Project(), name="Made in the app", guidelines="Be *kind*.")
    response = client.post(reverse("frontend:project-new"), data)
    project = Project.objects.get(name="Made in the app")
    assert response["Location"] == reverse(
        "frontend:project-settings", args=[project.pk]
    )
    assert project.guidelines == "Be *kind*."
    again = client.post(reverse("frontend:project-new"), data)
    assert "exists already" in again.context["form"].errors["name"][0]


def test_preview_is_the_compare_pages_sanitiser(world):
    from frontend.rendering import render_markdown

    client = client_for(world["users"]["admin"])
    for payload in XSS_PAYLOADS:
        response = client.post(reverse("frontend:markdown-preview"), {"text": payload})
        html = response.json()["html"]
        assert html == render_markdown(payload)
        assert "<script" not in html.lower()
        assert not re.search(r"<[^>]*\son\w+\s*=", html), payload  # no handler


def test_members_page_shows_the_quality_numbers(world):
    client = client_for(world["users"]["admin"])
    response = client.get(reverse("frontend:members", args=[world["project"].pk]))
    rows = response.context["members"]
    assert [r["role"] for r in rows][:1] == ["admin"]  # admins first
    assert len(rows) == 4  # annotator, reviewer, admin, colleague
    assert all({"n_labels", "agreement", "gold"} <= set(r) for r in rows)


def test_an_invite_link_is_shown_once_and_only_its_hash_kept(world):
    client = client_for(world["users"]["admin"])
    url = reverse("frontend:invite-new", args=[world["project"].pk])
    response = client.post(url, {"role": "reviewer", "days": 2})
    link = response.context["new_link"]
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert not Invite.objects.filter(token_hash=token).exists()
    page = client.get(reverse("frontend:members", args=[world["project"].pk]))
    assert token not in page.content.decode()
    anon = client_for(None)
    accept = anon.post(
        reverse("frontend:invite", args=[token]),
        {"username": "joiner", "password": "a-long-enough-passphrase-42"},
    )
    assert accept.status_code == 302
    assert Membership.objects.get(user__username="joiner").role == "reviewer"
    assert anon.get(reverse("frontend:invite", args=[token])).status_code == 404


def test_upload_with_a_bad_line_writes_nothing(world):
    client = client_for(world["users"]["admin"])
    project = world["project"]
    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": \n')
    response = client.post(
        reverse("frontend:upload", args=[project.pk]), {"files": [bad]}
    )
    preview = client.get(response["Location"])
    text = preview.content.decode()
    assert "bad.jsonl, line 2: invalid JSON" in text
    assert 'id="import-button"' not in text
    forced = client.post(response["Location"], {"action": "import"})
    assert forced.status_code == 400
    assert "bad.jsonl, line 2" in forced.content.decode()
    assert not Prompt.objects.filter(project=project).exists()


def test_members_numbers_are_the_quality_pages(world):
    from labelapp.queue import comparison_next_for, label_submit
    from labelapp.selectors.quality import annotator_stats

    project = world["project"]
    make_comparisons(project, 1)
    make_comparisons(project, 1, start=1, is_gold=True, gold_choice="a")
    labellers = [world["users"]["annotator"], world["users"]["reviewer"]]
    answers = {labellers[0].pk: "a", labellers[1].pk: "b"}
    for user in labellers:
        while lease := comparison_next_for(annotator=user, project=project):
            # The choice is of the sides as shown; a swapped pair shows B first.
            shown = (
                {"a": "b", "b": "a"}[answers[user.pk]]
                if lease.swapped
                else (answers[user.pk])
            )
            label_submit(
                assignment_id=lease.pk, annotator=user, choice=shown, strength=2
            )
    client = client_for(world["users"]["admin"])
    response = client.get(reverse("frontend:members", args=[project.pk]))
    rows = {r["username"]: r for r in response.context["members"]}
    for stat in annotator_stats(project=project):
        shown = rows[stat["username"]]
        assert shown["n_labels"] == stat["n_labels"] == 2
        assert shown["gold"] == stat["gold"]
        assert shown["agreement"] == stat["loo_agreement"]["rate"]
    ann = rows[labellers[0].get_username()]
    assert ann["gold"]["accuracy"] == 1.0
    assert rows[labellers[1].get_username()]["gold"]["accuracy"] == 0.0
    assert ann["agreement"] == 0.0  # the only other label always disagreed
    assert "100%" in response.content.decode()


def test_a_large_upload_goes_through_a_job(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    from labelapp.models import Job
    from labelapp.services import uploads

    monkeypatch.setattr(uploads, "JOB_BYTES", 10)
    client = client_for(world["users"]["admin"])
    project = world["project"]
    url = reverse(
        "frontend:upload-preview", args=[project.pk, world["ids"]["staging_id"]]
    )
    with django_capture_on_commit_callbacks():
        response = client.post(url, {"action": "import"})
    assert response["Location"] == reverse("frontend:jobs", args=[project.pk])
    job = Job.objects.get(project=project, kind=Job.Kind.IMPORT)
    assert job.params["staging_id"] == world["ids"]["staging_id"]
    assert not Prompt.objects.filter(project=project).exists()  # not yet


def test_the_settings_page_saves_a_strategy_by_name_or_a_mix(world):
    """Issue 17: the queue's selection strategy on the settings page — a name as
    typed, or a mix as JSON — through the one validator."""
    client = client_for(world["users"]["admin"])
    project = world["project"]
    url = reverse("frontend:project-settings", args=[project.pk])
    response = client.post(url, settings_data(project, selection_strategy="gap"))
    assert response.status_code == 302, response.context["form"].errors
    project.refresh_from_db()
    assert project.selection_strategy == "gap"
    mix = '{"uncertainty": 1, "random": 1}'
    client.post(url, settings_data(project, selection_strategy=mix))
    project.refresh_from_db()
    assert project.selection_strategy == {"uncertainty": 1, "random": 1}
    page = client.get(url).content.decode()
    assert "{&quot;random&quot;: 1, &quot;uncertainty&quot;: 1}" in page
    bad = client.post(url, settings_data(project, selection_strategy="sometimes"))
    assert (
        "Must be one of: random, uncertainty"
        in (bad.context["form"].errors["selection_strategy"][0])
    )
