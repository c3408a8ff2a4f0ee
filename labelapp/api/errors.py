"""API error responses: DRF's field-level errors, plus domain errors mapped to codes.

Every error the API answers is JSON: domain errors, DRF's own, a body over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413, Django alone would answer its HTML 400 page),
and the 400/403/404/500 that Django answers before a view runs (``json_error_view``,
wired as config.urls' handlers for /api/ paths). ``document_error_responses``
documents them in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labelapp.errors import DomainError


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


def _too_large_detail() -> str:
    from django.conf import settings

    return (
        "Request body too large: at most "
        f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)."
    )


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            {"detail": str(exc), "code": exc.code},
            status=exc.http_status or status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(_too_large_detail())
    elif isinstance(exc, TooManyFieldsSent):
        exc = PayloadTooLarge(str(exc))
    return drf_exception_handler(exc, context)


# --- errors Django answers before (or outside) a view ----------------------------

_DJANGO_ERRORS = {
    400: ("Bad request.", "bad_request"),
    403: ("Forbidden.", "permission_denied"),
    404: ("Not found.", "not_found"),
    500: ("Server error.", "server_error"),
}


def json_error(request: HttpRequest, code: int, exception: Exception | None = None):
    """The JSON body for an error Django answers itself (no DRF view ran)."""
    detail, name = _DJANGO_ERRORS[code]
    if code == 400 and isinstance(exception, RequestDataTooBig):
        return JsonResponse(
            {"detail": _too_large_detail(), "code": "too_large"}, status=413
        )
    return JsonResponse({"detail": detail, "code": name}, status=code)


# --- OpenAPI ---------------------------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "An error. Most carry `detail` (a message) and, for domain errors, `code`; "
        "a validation error maps each field name (or `non_field_errors`) to its "
        "messages."
    ),
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": {},
}

_DESCRIPTIONS = {
    "400": "Invalid input: the body names each bad field (or `detail` says what).",
    "403": "Not authenticated, or not allowed to do this.",
    "404": "No such object visible to you (or an invalid page cursor).",
    "409": "Conflict with the current state (e.g. an active job, a duplicate).",
    "413": "Request body over DATA_UPLOAD_MAX_MEMORY_SIZE.",
    "415": "Unsupported request content type (send JSON, a form or multipart).",
    "429": "Too many failed token authentications from your address; retry later.",
}
_WRITES = {"post", "put", "patch", "delete"}


def _error(code: str) -> dict:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
        },
    }


def document_error_responses(
    result: dict, generator: Any, request: Any, public: bool
) -> dict:
    """drf-spectacular postprocessing hook: every operation lists the error codes
    it can answer. 403 and 429 apply to all (authentication comes first); 404 to
    every path with an id and every paginated list (bad cursor); 400 to anything
    that takes a body or query parameters; 409, 413 and 415 to writes."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
        ERROR_SCHEMA
    )
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            params = operation.get("parameters", [])
            codes = ["403", "429"]
            if "{" in path or any(p.get("name") == "cursor" for p in params):
                codes.append("404")
            if method in _WRITES or any(p.get("in") == "query" for p in params):
                codes.append("400")
            if method in _WRITES:
                codes += ["409", "413", "415"]
            responses = operation["responses"]
            for code in sorted(codes):
                responses.setdefault(code, _error(code))
            operation["responses"] = dict(sorted(responses.items()))
    return result
