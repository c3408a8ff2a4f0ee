"""Server side of the annotator pages: auth, membership, CSP, no inline script."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from frontend.middleware import CSP
from labelapp.models import Membership, Project
from tests.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def login(client: Client, user: Any) -> None:
    assert client.login(username=user.get_username(), password=PASSWORD)


def assert_no_inline_script(html: str) -> None:
    # Every <script> has a src; no on*= handlers; no javascript: URLs; no style=.
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.I):
        assert "src=" in tag, tag
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, flags=re.I)
    # (as text, e.g. an unrendered "[x](javascript:…)", it is inert)
    assert not re.search(r"=\s*[\"']?\s*javascript:", html, flags=re.I)
    assert not re.search(r"<[^>]+\sstyle\s*=", html, flags=re.I)
    assert "<style" not in html.lower()


def test_login_page_and_login_flow(client: Client, annotator: Any) -> None:
    page = client.get(reverse("frontend:login"))
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CSP
    assert_no_inline_script(page.content.decode())
    response = client.post(
        reverse("frontend:login"), {"username": "ann", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.url == reverse("frontend:projects")


def test_bad_password_shows_error(client: Client, annotator: Any) -> None:
    response = client.post(
        reverse("frontend:login"), {"username": "ann", "password": "x"}
    )
    assert response.status_code == 200
    assert b"didn't match" in response.content


def test_pages_require_login(client: Client, project: Project) -> None:
    for url in (
        reverse("frontend:projects"),
        reverse("frontend:compare", args=[project.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("frontend:login"))
    response = client.post(reverse("frontend:compare-next", args=[project.pk]))
    assert response.status_code == 401


def test_logout_is_a_post(client: Client, annotator: Any) -> None:
    login(client, annotator)
    response = client.post(reverse("frontend:logout"))
    assert response.status_code == 302
    assert client.get(reverse("frontend:projects")).status_code == 302


def test_project_list_shows_progress_for_my_projects(
    client: Client, annotator: Any, project: Project, comparisons: Any
) -> None:
    comparisons(3)
    Project.objects.create(name="Not mine")
    login(client, annotator)
    response = client.get(reverse("frontend:projects"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Helpfulness" in html
    assert "Not mine" not in html
    assert reverse("frontend:compare", args=[project.pk]) in html
    row = response.context["rows"][0]
    assert row["progress"] == {"done_today": 0, "done_total": 0, "remaining": 3}
    assert response.headers["Content-Security-Policy"] == CSP
    assert_no_inline_script(html)


def test_compare_page_shell(client: Client, annotator: Any, project: Project) -> None:
    login(client, annotator)
    response = client.get(reverse("frontend:compare", args=[project.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert_no_inline_script(html)
    assert '<script type="module" src="/static/frontend/compare.js">' in html
    # Guidelines rendered from markdown into a collapsible panel.
    assert "<details" in html and "<strong>more helpful</strong>" in html
    assert 'data-next-url="/projects/' in html
    assert 'data-label-url="/api/v1/assignments/{id}/label/"' in html
    for key in ("<kbd>1</kbd>", "<kbd>2</kbd>", "<kbd>t</kbd>", "<kbd>x</kbd>"):
        assert key in html
    for key in "qwer":
        assert f"<kbd>{key}</kbd>" in html


def test_guidelines_are_sanitised(
    client: Client, annotator: Any, project: Project
) -> None:
    project.guidelines = "<script>alert(1)</script> [x](javascript:alert(1))"
    project.save()
    login(client, annotator)
    html = client.get(reverse("frontend:compare", args=[project.pk])).content.decode()
    assert "<script>alert" not in html
    assert_no_inline_script(html)


def test_non_member_gets_404(
    client: Client, django_user_model: Any, project: Project
) -> None:
    other = django_user_model.objects.create_user(username="eve", password=PASSWORD)
    login(client, other)
    assert client.get(reverse("frontend:compare", args=[project.pk])).status_code == 404
    response = client.post(
        reverse("frontend:compare-next", args=[project.pk]),
        {"exclude": []},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert not Membership.objects.filter(user=other).exists()


def test_static_files_exist() -> None:
    from django.contrib.staticfiles import finders

    css = finders.find("frontend/app.css")
    js = finders.find("frontend/compare.js")
    assert css and js
    text = Path(js).read_text(encoding="utf-8")
    # The page must work offline: no remote imports.
    assert "http://" not in text and "https://" not in text
    assert ".md pre .k" in Path(css).read_text(encoding="utf-8")
