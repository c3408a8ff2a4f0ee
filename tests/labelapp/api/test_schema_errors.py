"""The OpenAPI schema documents every error code the API answers (issue 14 item 11),
and the docs page is served from local files under the CSP (issue 15 item 4)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db

WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_documents_its_error_codes(schema):
    assert schema["components"]["schemas"]["Error"]["type"] == "object"
    seen = set()
    for path, method, operation in _operations(schema):
        codes = set(operation["responses"])
        seen |= codes
        assert {"403", "429"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method in WRITES:
            assert {"400", "409", "413", "415"} <= codes, (method, path)
        if method == "get" and "{" not in path and path != "/api/v1/me/":
            assert {"400", "404"} <= codes, (method, path)  # filters, cursor
        error = operation["responses"]["403"]["content"]["application/json"]
        assert error["schema"] == {"$ref": "#/components/schemas/Error"}
    assert {"400", "403", "404", "409", "413", "429"} <= seen


def test_docs_page_is_local_and_has_no_inline_code():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle" in html
    assert "cdn" not in html.lower() and "<script>" not in html
    assert "<style>" not in html
    assert "script-src 'self'" in response["Content-Security-Policy"]
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()


def test_schema_is_text_for_a_browser_and_openapi_for_tools():
    page = Client().get("/api/schema/", HTTP_ACCEPT="text/html,*/*;q=0.8")
    assert page["Content-Type"] == "text/plain; charset=utf-8"
    assert page.content.startswith(b"openapi: 3")
    tool = Client().get("/api/schema/")
    assert tool["Content-Type"].startswith("application/vnd.oai.openapi")
    as_json = Client().get("/api/schema/?format=json", HTTP_ACCEPT="text/html")
    assert as_json["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert json.loads(as_json.content)["info"]["title"] == "Pairloop API"
