"""The alternative to the fast lane that healthchecks uses for its hottest endpoint
(``hc/api/views.py`` ``ping``): plain Django function views for ``next`` and
``label``, no DRF dispatch, behind Django's full middleware stack.

bench/queue_bench.py ``--ablate plain`` serves this URLconf (ROOT_URLCONF set by
bench/gunicorn_plain.py) with the fast lane off, alternated with the lane, to decide
whether the lane earns its keep (issue 13: within 10 % of the lane's labels/s, the
plain view wins and the lane goes).

What the views answer themselves is what the lane answers: a token-authenticated,
cookie-less JSON request whose body needs no coercion; the same services, the same
body builders, the same renderer. Anything else, and any error raised before a
write, is handed to the DRF view in-process (nothing was written: the queue's writes
are single transactions). Django's middleware sets every header.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer

from labelapp import selectors
from labelapp.api import serializers as s
from labelapp.api import views as api_views
from labelapp.api.authentication import TokenAuthentication
from labelapp.errors import DomainError
from labelapp.queue import comparison_next_for, label_submit

_auth = TokenAuthentication()
_render = JSONRenderer().render
_expected = (DomainError, APIException, UnicodeDecodeError, json.JSONDecodeError)
_drf_next = api_views.ProjectViewSet.as_view({"post": "next"})
_drf_label = api_views.AssignmentViewSet.as_view({"post": "label"})
_JSON_ACCEPT = {"", "*/*", "application/json"}


def _token(request: HttpRequest) -> str | None:
    auth = request.headers.get("Authorization", "").split()
    if len(auth) != 2 or auth[0].lower() != "token" or not auth[1].isascii():
        return None
    if request.COOKIES or request.GET:
        return None
    if request.headers.get("Accept", "") not in _JSON_ACCEPT:
        return None
    return auth[1]


def _json(status: int, data: object) -> HttpResponse:
    response = HttpResponse(
        _render(data), status=status, content_type="application/json"
    )
    response["Vary"] = "Accept"
    response["Allow"] = "POST, OPTIONS"
    return response


@csrf_exempt
def next_view(request: HttpRequest, pk: str) -> HttpResponse:
    key = _token(request) if request.method == "POST" else None
    if key is None:
        return _drf_next(request, pk=pk)
    try:
        user, _ = _auth.authenticate_credentials(key)
        project_id = api_views.path_id(pk, "Project not found.")
        assignment = comparison_next_for(annotator=user, project=project_id)
    except _expected:
        return _drf_next(request, pk=pk)
    if assignment is None:
        response = HttpResponse(status=204)
        response["Vary"] = "Accept"
        response["Allow"] = "POST, OPTIONS"
        return response
    return _json(200, s.next_data(selectors.assignment_payload(assignment)))


@csrf_exempt
def label_view(request: HttpRequest, pk: str) -> HttpResponse:
    key = _token(request) if request.method == "POST" else None
    if key is None or request.content_type != "application/json":
        return _drf_label(request, pk=pk)
    try:
        user, _ = _auth.authenticate_credentials(key)
        assignment_id = api_views.path_id(pk)
        values = s.plain_label_input(json.loads(request.body.decode("utf-8")))
        if values is None:
            return _drf_label(request, pk=pk)
        label, created = label_submit(
            assignment_id=assignment_id, annotator=user, **values
        )
    except _expected:
        return _drf_label(request, pk=pk)
    return _json(201 if created else 200, s.submitted_label_data(label))


urlpatterns = [
    re_path(r"^api/v1/projects/(?P<pk>[0-9]{1,19})/next/$", next_view),
    re_path(r"^api/v1/assignments/(?P<pk>[0-9]{1,19})/label/$", label_view),
    path("", include("config.urls")),
]
