"""Security headers for pages: Pairloop's own headers (a strict
Content-Security-Policy) from config/security.py, the list the fast lane sends too."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config import security
from config.security import CSP

__all__ = ["CSP", "ContentSecurityPolicyMiddleware"]


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.headers = security.own_headers()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not request.path.startswith(security.CSP_EXEMPT_PREFIXES):
            for name, value in self.headers:
                response.headers.setdefault(name, value)
        return response
