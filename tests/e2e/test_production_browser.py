"""The production layout in a real browser (issue 14 item 1, issue 15 item 4):
docker-compose's web process (collectstatic, then gunicorn, DEBUG=0) serves its own
static files through WhiteNoise, hashed and cached for ever, under the strict CSP;
an annotator logs in through the page and labels a pair on the compare page; the API
docs render from local files (no CDN) without a CSP violation; the schema is
readable in the browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from labelapp.models import Label, Membership, Project
from tests.e2e.conftest import Processes
from tests.frontend.conftest import make_comparison
from tests.labelapp.api.live import PROXY_HEADERS, start_production_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "prod-e2e-password-3vX"


@pytest.fixture
def prod(transactional_db, tmp_path, settings) -> Iterator[str]:
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    procs = Processes(tmp_path)
    try:
        yield start_production_web(procs, tmp_path)
    finally:
        procs.stop_all()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    """A page behind the (simulated) TLS proxy, recording what the page did: console
    errors, CSP violations, every host it asked for."""
    context = browser.new_context(extra_http_headers=PROXY_HEADERS)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.console_errors = []
    page.hosts = set()
    page.on(
        "console",
        lambda m: m.type == "error" and page.console_errors.append(m.text),
    )
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    page.on("request", lambda r: page.hosts.add(urlsplit(r.url).netloc))
    yield page
    context.close()


def _project(django_user_model: Any) -> Project:
    user = django_user_model.objects.create_user(username="ann", password=PASSWORD)
    project = Project.objects.create(name="Production", overlap=1)
    Membership.objects.create(project=project, user=user)
    for i in range(2):
        make_comparison(
            project,
            [{"role": "user", "content": f"Question {i}?"}],
            f"Left answer {i}",
            f"Right answer {i}",
            random_key=i / 10,
        )
    return project


def test_gunicorn_debug_off_serves_static_and_labels(
    prod: str, tab: Any, django_user_model: Any
) -> None:
    project = _project(django_user_model)
    tab.goto(f"{prod}/login/")
    tab.fill("#id_username", "ann")
    tab.fill("#id_password", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{prod}/")

    tab.goto(f"{prod}/projects/{project.pk}/compare/")
    tab.wait_for_function("() => window.pairloopStats && window.pairloopStats.current")
    current = tab.evaluate("() => window.pairloopStats.current")
    for key in ("1", "e"):
        tab.keyboard.press(key)
    tab.keyboard.press("Enter")
    tab.wait_for_function("() => window.pairloopStats.pending === 0")
    label = Label.objects.get(comparison_id=current["comparisonId"])
    assert label.annotator.username == "ann" and label.strength == 3
    assert not tab.console_errors, tab.console_errors

    # Every script and stylesheet the page loaded is a hashed name from
    # collectstatic, served by WhiteNoise with a far-future cache header.
    assets = tab.evaluate(
        """() => [...document.querySelectorAll('script[src], link[rel=stylesheet]')]
                  .map(e => e.src || e.href)"""
    )
    assert any("/compare." in a for a in assets) and any("/app." in a for a in assets)
    for asset in assets:
        path = urlsplit(asset).path
        assert re.search(r"\.[0-9a-f]{12}\.(js|css)$", path), path
        response = httpx.get(
            f"{prod}{path}", headers={**PROXY_HEADERS, "Accept-Encoding": "gzip"}
        )
        assert response.status_code == 200, path
        cache = response.headers["Cache-Control"]
        assert "immutable" in cache and "max-age=315360000" in cache, cache
        assert response.headers.get("Content-Encoding") == "gzip", path
    # The pages keep the strict CSP.
    page = httpx.get(f"{prod}/login/", headers=PROXY_HEADERS)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]


def test_api_docs_render_offline_under_the_csp(prod: str, tab: Any) -> None:
    tab.goto(f"{prod}/api/docs/")
    tab.wait_for_selector(".opblock-summary", timeout=30_000)
    operations = tab.locator(".opblock").count()
    assert operations >= 20, operations
    assert tab.locator("text=/api/v1/projects/").count() > 0
    # Only this server was asked for anything (no CDN), and nothing was refused.
    assert tab.hosts == {urlsplit(prod).netloc}, tab.hosts
    assert not tab.console_errors, tab.console_errors
    response = httpx.get(f"{prod}/api/docs/", headers=PROXY_HEADERS)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in response.text and "<style>" not in response.text


def test_schema_is_readable_in_the_browser(prod: str, tab: Any) -> None:
    response = tab.goto(f"{prod}/api/schema/")  # a download would raise here
    assert response.headers["content-type"].startswith("text/plain")
    assert "openapi: 3" in tab.inner_text("body")
    # Tools still get the OpenAPI media types.
    plain = httpx.get(f"{prod}/api/schema/", headers=PROXY_HEADERS)
    assert plain.headers["Content-Type"].startswith("application/vnd.oai.openapi")
    as_json = httpx.get(f"{prod}/api/schema/?format=json", headers=PROXY_HEADERS)
    assert as_json.json()["info"]["title"] == "Pairloop API"
