"""Issue 18's flows in a real browser (Debian's chromium via Playwright): staff create
a project by keyboard with the guidelines' live preview; an admin invites a member by
link and the invitee makes their account; an admin uploads a file with a bad line
(error shown, nothing written) and a good one (rows written, pairs built).
Screenshots of the new pages go to docs/ with PAIRLOOP_SCREENSHOT=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from labelapp.models import Comparison, Membership, Project, Prompt, Response
from tests.frontend.dashboard_data import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("PAIRLOOP_SCREENSHOT") == "1"


def shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(ROOT / "docs" / name), full_page=True)


def login(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.wait_for_function("() => document.activeElement.name === 'username'")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/", wait_until="commit")


def user(name: str, **kwargs: Any) -> Any:
    return get_user_model().objects.create_user(
        username=name, password=PASSWORD, **kwargs
    )


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.django_db(transaction=True)
def test_create_a_project_by_keyboard(live_server: Any, page: Any) -> None:
    user("boss", is_staff=True)
    login(page, live_server.url, "boss")
    page.get_by_role("link", name="New project").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.name === 'name'")
    page.keyboard.type("Browser-made")
    page.keyboard.press("Tab")  # the guidelines
    page.keyboard.type("Prefer the **honest** answer. <img src=x onerror=alert(1)>")
    preview = page.locator("#guidelines-preview")
    preview.locator("strong", has_text="honest").wait_for()
    assert preview.locator("img").count() == 0  # sanitised like model text
    page.keyboard.press("Tab")  # overlap k
    page.keyboard.press("Control+A")
    page.keyboard.type("0")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # Refused field by field, nothing created.
    page.locator("#id_overlap-error", has_text="greater than or equal to 1").wait_for()
    assert not Project.objects.filter(name="Browser-made").exists()
    page.locator("#id_overlap").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    project = Project.objects.get(name="Browser-made")
    assert project.overlap == 2 and "**honest**" in project.guidelines
    assert Membership.objects.get(project=project).role == "admin"
    page.get_by_text("Created project Browser-made.").wait_for()
    shot(page, "project-settings-page.png")
    assert page.js_errors == [] and page.dialogs == []


@pytest.mark.django_db(transaction=True)
def test_add_a_member_by_invite_link(live_server: Any, browser: Any, page: Any) -> None:
    project = Project.objects.create(name="Invites")
    Membership.objects.create(project=project, user=user("lead"), role="admin")
    login(page, live_server.url, "lead")
    page.goto(f"{live_server.url}/projects/{project.pk}/members/")
    page.locator("#invite-role").focus()
    page.keyboard.press("ArrowDown")  # annotator -> reviewer
    assert page.locator("#invite-role").input_value() == "reviewer"
    page.keyboard.press("Tab")  # days
    with page.expect_navigation():
        page.keyboard.press("Enter")
    link = page.locator("#invite-link").input_value()
    assert page.evaluate("() => document.activeElement.id") == "invite-link"
    shot(page, "members-page.png")

    stranger = browser.new_context()
    invitee = stranger.new_page()
    invitee.goto(link)
    invitee.wait_for_function("() => document.activeElement.name === 'username'")
    invitee.keyboard.type("newbie")
    invitee.keyboard.press("Tab")
    invitee.keyboard.type("a-long-enough-passphrase-42")
    with invitee.expect_navigation():
        invitee.keyboard.press("Enter")
    invitee.wait_for_url(f"{live_server.url}/")
    projects = invitee.locator("table.projects")
    assert projects.get_by_role("row", name="Invites").count() == 1
    assert invitee.locator(".who").inner_text() == "newbie"  # logged in
    membership = Membership.objects.get(project=project, user__username="newbie")
    assert membership.role == "reviewer"
    # Used once: the same link now says so.
    invitee.goto(link)
    invitee.get_by_text("Invite link not valid").wait_for()
    stranger.close()
    page.reload()
    assert page.locator("tr[data-member=newbie]").count() == 1


def lines(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


@pytest.mark.django_db(transaction=True)
def test_upload_a_bad_file_then_a_good_one(
    live_server: Any, page: Any, tmp_path: Path
) -> None:
    project = Project.objects.create(name="Uploads", overlap=1)
    Membership.objects.create(project=project, user=user("owner"), role="admin")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines({"prompt": "fine"}) + '{"prompt": "broken\n')
    good = tmp_path / "good.jsonl"
    good.write_text(
        lines(
            {"prompt": "Say hi.", "response": "Hi!"},
            {"prompt": "Say hi.", "response": "Hello there."},
            {"prompt": "Say hi.", "response": "Hey."},
            {"prompt": "Pick one.", "chosen": "This.", "rejected": "That."},
        )
    )
    login(page, live_server.url, "owner")
    upload_url = f"{live_server.url}/projects/{project.pk}/upload/"

    page.goto(upload_url)
    page.set_input_files("#upload-files", str(bad))
    page.locator("#upload-button").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.locator(".line-error", has_text="bad.jsonl, line 2: invalid JSON").wait_for()
    assert page.locator("#import-button").count() == 0
    assert page.locator("#import-blocked").is_visible()
    assert not Prompt.objects.filter(project=project).exists()
    with page.expect_navigation():
        page.get_by_role("button", name="Discard").press("Enter")

    page.set_input_files("#upload-files", str(good))
    page.locator("#upload-button").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    detected = page.locator(".detected-format").inner_text()
    assert "prompt with a response (3)" in detected
    assert "TRL preference pair (1)" in detected
    assert page.locator(".first-lines li").count() == 4
    shot(page, "upload-preview-page.png")
    page.locator("#make-pairs").focus()
    page.keyboard.press("Space")
    assert page.locator("#make-pairs").is_checked()
    page.locator("#import-button").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.get_by_text("Imported: 4 lines").wait_for()
    assert Prompt.objects.filter(project=project).count() == 2
    assert Response.objects.filter(prompt__project=project).count() == 5
    # 3 pairs built from the 3 responses of one prompt, plus the labelled pair.
    assert Comparison.objects.filter(project=project).count() == 4
    assert page.js_errors == [] and page.dialogs == []
