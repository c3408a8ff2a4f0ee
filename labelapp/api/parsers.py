"""Request body parsers (settings: REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

DRF's parsers with two refusals, both a 400 naming where the problem is:

* JSON nested deeper than ``MAX_DEPTH``: the stdlib parser recurses, so thousands
  of levels are a RecursionError (a 500) and even a few hundred make every later
  recursive walk (serializers, hashing, the database driver) slow; no payload of
  this API is more than a few levels deep.
* a NUL character anywhere, keys included: PostgreSQL refuses it in text and in
  jsonb (a DataError, a 500, after the request already did its work).

``loads`` is the same check for code that parses a body itself (the fast lane).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 64


def _where(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:] or (
        "the body"
    )


def check_value(value: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` unchanged, or ParseError for nesting over ``max_depth`` or a NUL
    character in any string (keys included). Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, int, list[str | int]]] = [(value, 1, [])]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ParseError(
                    f"NUL characters (\\u0000) are not allowed (at {_where(path)})."
                )
        elif isinstance(node, dict | list):
            if depth > max_depth:
                raise ParseError(
                    f"JSON nested deeper than {max_depth} levels (at {_where(path)})."
                )
            if isinstance(node, dict):
                for key, item in node.items():
                    if "\x00" in key:
                        raise ParseError(
                            "NUL characters (\\u0000) are not allowed "
                            f"(in a key at {_where(path)})."
                        )
                    stack.append((item, depth + 1, [*path, key]))
            else:
                stack.extend(
                    (item, depth + 1, [*path, i]) for i, item in enumerate(node)
                )
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse a JSON body as the API does: strict JSON (no NaN/Infinity), depth and
    NUL checked. Raises ParseError (a 400) for anything else."""
    try:
        if isinstance(data, bytes):
            data = data.decode(settings.DEFAULT_CHARSET)
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, constants
        raise ParseError(f"JSON parse error - {exc}") from None
    return check_value(value)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        # DRF hands over the raw WSGI stream, which (unlike request.body) does not
        # enforce Django's size limit.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if stream is None:
            raw = b""
        else:
            raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig("Request body exceeded DATA_UPLOAD_MAX_MEMORY_SIZE")
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return loads(text)


def _check_form(data: Any) -> None:
    for key, values in data.lists():
        if "\x00" in key or any(isinstance(v, str) and "\x00" in v for v in values):
            raise ParseError(
                f"NUL characters (\\u0000) are not allowed (in field {key!r})."
            )


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _check_form(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        result = super().parse(stream, media_type, parser_context)
        _check_form(result.data)
        return result
