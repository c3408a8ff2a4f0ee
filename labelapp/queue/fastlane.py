"""A fast lane for the two requests an annotator makes per label.

``POST /api/v1/projects/{id}/next/`` and ``POST /api/v1/assignments/{id}/label/``
are most of the API's traffic at labelling time (two per label, hundreds a second in a
campaign). Through Django's middleware, URL resolver and DRF's dispatch (content
negotiation, authenticators, permissions, parsers, renderer) each costs ~1.5 ms of
Python before and after the queue's own work. This WSGI wrapper answers the plain
case of those two requests directly: it authenticates the token as DRF's
TokenAuthentication does (same class, same cache), calls the same queue services and
the same body builders as the views, renders with DRF's JSONRenderer and sets the
headers the middleware would set. ``tests/labelapp/queue/test_fastlane.py`` checks that
both paths answer every case alike, byte for byte.

Anything else goes to Django unchanged, so every rule keeps one home:

* other methods and URLs, a session cookie (browser: session auth and CSRF apply),
  no ``Token`` header, a host outside ALLOWED_HOSTS, an ``Accept`` other than JSON,
  plain HTTP when SSL redirect is on, a body that is not small plain JSON;
* any error before the queue's write commits: an invalid token, a non-member, a
  conflict, a bad field. The queue's writes are single transactions, so such an
  error has written nothing, and Django re-runs the request and renders its own
  error response (errors are rare and not worth a second renderer).

After the write has committed, the lane fails closed: an error while building the
response is logged and answered 500, never handed to Django, whose re-run would not
be the same request any more (a second ``label`` finds the stored label and answers
200 instead of 201).

The security headers come from config/security.py, the list the middleware uses;
while ``settings.MIDDLEWARE`` holds a middleware that list does not stand in for,
the lane is off. ``API_FAST_LANE`` (settings, default on) turns it off too.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer

from config import security
from labelapp import selectors
from labelapp.api import parsers, serializers
from labelapp.api.authentication import TokenAuthentication
from labelapp.api.views import path_id
from labelapp.errors import DomainError
from labelapp.queue import comparison_next_for, label_submit

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

_ROUTES = re.compile(
    r"^/api/v1/(?:projects/(?P<project>[0-9]{1,19})/next"
    r"|assignments/(?P<assignment>[0-9]{1,19})/label)/$"
)
_JSON_ACCEPT = {"", "*/*", "application/json"}
_JSON_CONTENT_TYPES = {"application/json", "application/json; charset=utf-8"}
_STATUS = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    500: "500 Internal Server Error",
}
# The write stands; the client may repeat the request (a label with its stored
# answer, or its idempotency key, gets the stored label back).
_AFTER_COMMIT_ERROR = (
    b'{"detail":"The request was carried out, but its response could not be'
    b' built; repeat it to get the result.","code":"server_error"}'
)


class _Decline(Exception):
    """Not a plain case: Django answers."""


class FastLane:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._ready = False

    def _setup(self) -> None:
        # Built on first use: settings are read at call time, not import time.
        self._expected = (
            DomainError,
            APIException,
            UnicodeDecodeError,
            json.JSONDecodeError,
        )
        self._path_id = path_id  # the views' own id check (NotFound: Django's 404)
        self._auth = TokenAuthentication()
        self._render = JSONRenderer().render
        self._next = comparison_next_for
        self._label = label_submit
        self._payload = selectors.assignment_payload
        self._next_data = serializers.next_data
        self._label_input = serializers.plain_label_input
        self._label_data = serializers.submitted_label_data
        # What DRF and the session middleware add to these responses (the parity
        # test pins them), then the security headers, from the middleware's list.
        # Vary: DRF names Accept when it has more than one renderer; the session
        # middleware names Cookie once session auth has looked for a session.
        renderers = settings.REST_FRAMEWORK.get("DEFAULT_RENDERER_CLASSES", ())
        vary = "Accept, Cookie" if len(renderers) > 1 else "Cookie"
        base = [("Vary", vary), ("Allow", "POST, OPTIONS")]
        self._headers = {
            secure: [*base, *security.response_headers(secure=secure)]
            for secure in (False, True)
        }
        self._cookie = settings.SESSION_COOKIE_NAME + "="
        # A middleware the list does not stand in for: everything to Django.
        self._enabled = security.bypass_allowed()
        if not self._enabled:
            log.warning(
                "fast lane off: MIDDLEWARE has entries config.security does not"
                " stand in for: %s",
                sorted(set(settings.MIDDLEWARE) - security.BYPASSABLE_MIDDLEWARE),
            )
        self._ready = True

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or not settings.API_FAST_LANE:
            return self.app(environ, start_response)
        route = _ROUTES.match(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        if not self._ready:
            self._setup()
        if not self._enabled:
            return self.app(environ, start_response)
        body = None
        try:
            key = self._plain_request(environ)
            body = self._read_body(environ)
            answer = self._answer(route, key, body, environ)
        except _Decline:
            answer = None
        if answer is None:
            if body is not None:
                # The body was read: hand Django a fresh stream of the same bytes.
                # (Declined before reading, the stream is Django's untouched.)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
            return self.app(environ, start_response)
        code, content = answer
        secure = environ.get("wsgi.url_scheme") == "https"
        headers = [("Content-Length", str(len(content))), *self._headers[secure]]
        if content:
            headers.insert(0, ("Content-Type", "application/json"))
        start_response(_STATUS[code], headers)
        return [content]

    def _plain_request(self, environ: dict) -> str:
        """The token of a request the fast lane may answer; _Decline otherwise."""
        auth = environ.get("HTTP_AUTHORIZATION", "").split()
        if len(auth) != 2 or auth[0].lower() != "token" or not auth[1].isascii():
            raise _Decline
        if self._cookie in environ.get("HTTP_COOKIE", ""):
            raise _Decline
        if environ.get("HTTP_ACCEPT", "") not in _JSON_ACCEPT:
            raise _Decline
        if environ.get("QUERY_STRING"):
            raise _Decline  # e.g. DRF's ?format= renderer override
        if settings.SECURE_SSL_REDIRECT and environ.get("wsgi.url_scheme") != "https":
            raise _Decline
        if environ.get("HTTP_X_FORWARDED_HOST") or environ.get(
            "HTTP_X_FORWARDED_PROTO"
        ):
            raise _Decline  # proxy headers: Django's own rules decide
        host = environ.get("HTTP_HOST", "")
        domain, _port = split_domain_port(host)
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        if not domain or not validate_host(domain, allowed):
            raise _Decline
        return auth[1]

    @staticmethod
    def _read_body(environ: dict) -> bytes:
        """The body, read in full; _Decline (stream untouched) for anything but a
        small body of declared length."""
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise _Decline  # chunked: no length to trust, Django's to read
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise _Decline
        size = int(length)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and size > limit:
            raise _Decline  # Django refuses it with its own error
        return environ["wsgi.input"].read(size) if size else b""

    def _answer(
        self, route: re.Match, key: str, body: bytes, environ: dict
    ) -> tuple[int, bytes] | None:
        """(status, body) of a successful answer; None: let Django answer."""
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            try:
                user, _token = self._auth.authenticate_credentials(key)
                if route["project"] is not None:
                    project_id = self._path_id(route["project"], "Project not found.")
                    done = self._answer_next(user, project_id)
                else:
                    assignment_id = self._path_id(route["assignment"])
                    done = self._answer_label(user, assignment_id, body, environ)
            except self._expected:
                return None  # nothing written: Django re-runs it, renders its error
            except Exception:
                # Not expected here, but the write (if any) was rolled back, so
                # Django may still answer; a bug in the lane must not go unseen.
                log.exception("fast lane: unexpected error; handing over to Django")
                return None
            if done is None:
                return None
            code, build = done
            try:
                return code, build()
            except Exception:
                # Fail closed: the write has committed, so Django must not re-run
                # the request (a second label would answer 200, not 201).
                log.exception(
                    "fast lane: building the %s response failed after the write"
                    " committed; answering 500",
                    code,
                )
                return 500, _AFTER_COMMIT_ERROR
        finally:
            signals.request_finished.send(sender=self.__class__)

    def _answer_next(self, user: Any, project_id: int) -> tuple:
        """(status, body builder), the lease made (and committed: autocommit)."""
        assignment = self._next(annotator=user, project=project_id)
        if assignment is None:
            return 204, lambda: b""
        return 200, lambda: self._render(self._next_data(self._payload(assignment)))

    def _answer_label(
        self, user: Any, assignment_id: int, body: bytes, environ: dict
    ) -> tuple | None:
        """(status, body builder), the label committed; None: Django's."""
        if environ.get("CONTENT_TYPE", "").lower() not in _JSON_CONTENT_TYPES:
            return None
        # Only what needs no coercion: anything the serializer would have to
        # convert, trim or refuse is Django's (DRF's parser is also stricter, e.g.
        # about NaN, so the lane never decides what the parser would refuse).
        values = self._label_input(parsers.loads(body))
        if values is None:
            return None
        label, created = self._label(
            assignment_id=assignment_id, annotator=user, **values
        )
        return (201 if created else 200), lambda: self._render(self._label_data(label))


def with_fast_lane(app: WSGIApp) -> WSGIApp:
    return FastLane(app)
