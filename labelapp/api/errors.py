"""API error responses: DRF's field-level errors, plus domain errors mapped to codes."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labelapp.errors import DomainError


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            {"detail": str(exc), "code": exc.code},
            status=exc.http_status or status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)
