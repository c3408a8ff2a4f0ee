"""Writes for content created through the API: prompts and responses (comparisons go
through ``services.comparison_create``). Bulk imports live elsewhere; these enforce
the same invariants one row at a time."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from labelapp.errors import Conflict, ValidationFailed
from labelapp.models import (
    Project,
    Prompt,
    Response,
    Round,
    content_hash,
    text_hash,
)


def prompt_create(
    *, project: Project, messages: list[dict], external_id: str = "", source: str = ""
) -> Prompt:
    try:
        with transaction.atomic():
            return Prompt.objects.create(
                project=project,
                messages=messages,
                content_hash=content_hash(messages),
                external_id=external_id,
                source=source,
            )
    except IntegrityError as exc:
        raise Conflict("This prompt already exists in the project.") from exc


def response_create(
    *,
    prompt: Prompt,
    text: str,
    origin: str = Response.Origin.HUMAN,
    model_ref: str = "",
    round: Round | None = None,
) -> Response:
    if round is not None and round.project_id != prompt.project_id:
        raise ValidationFailed("round: belongs to another project")
    try:
        with transaction.atomic():
            return Response.objects.create(
                prompt=prompt,
                text=text,
                text_hash=text_hash(text),
                origin=origin,
                model_ref=model_ref,
                round=round,
            )
    except IntegrityError as exc:
        raise Conflict("This response text already exists for the prompt.") from exc
