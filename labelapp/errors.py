"""Domain errors raised by services and the queue; the API maps them to HTTP codes."""

from __future__ import annotations


class DomainError(Exception):
    code = "invalid"
    http_status = 400


class ValidationFailed(DomainError):
    code = "invalid"
    http_status = 400


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class PermissionDenied(DomainError):
    code = "permission_denied"
    http_status = 403


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class ImportFailed(DomainError):
    """A data file could not be imported; the message names file, line and problem."""

    code = "import_failed"
    http_status = 400
