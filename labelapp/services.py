"""Writes that are not part of the queue: projects, prompts, responses, comparisons."""

from __future__ import annotations

import random

from django.db import transaction

from labelapp.errors import ValidationFailed
from labelapp.models import (
    Comparison,
    Project,
    Prompt,
    Response,
    content_hash,
    text_hash,
)


def project_create(*, name: str, **fields: object) -> Project:
    if not name.strip():
        raise ValidationFailed("a project needs a name")
    return Project.objects.create(name=name.strip(), **fields)


def prompt_get_or_create(
    *, project: Project, messages: list[dict[str, str]], external_id: str = ""
) -> Prompt:
    prompt, _ = Prompt.objects.get_or_create(
        project=project,
        content_hash=content_hash(messages),
        defaults={"messages": messages, "external_id": external_id},
    )
    return prompt


def response_get_or_create(
    *, prompt: Prompt, text: str, origin: str = Response.Origin.IMPORT, **fields: object
) -> Response:
    if not text.strip():
        raise ValidationFailed("a response needs text")
    response, _ = Response.objects.get_or_create(
        prompt=prompt,
        text_hash=text_hash(text),
        defaults={"text": text, "origin": origin, **fields},
    )
    return response


@transaction.atomic
def comparison_create(
    *,
    prompt: Prompt,
    response_x: Response,
    response_y: Response,
    origin: str = Comparison.Origin.IMPORT,
    labels_required: int | None = None,
    priority: int = 0,
    rng: random.Random | None = None,
    **fields: object,
) -> tuple[Comparison, bool]:
    """Create (or return) the comparison of two responses to one prompt.

    The database holds "the two responses differ" (a < b) and uniqueness; that both
    belong to the comparison's prompt needs a join, so it is checked here.
    Returns (comparison, created); ``swapped`` callers can tell from the ids whether
    x became B.
    """
    if response_x.pk == response_y.pk:
        raise ValidationFailed("a comparison needs two different responses")
    for response in (response_x, response_y):
        if response.prompt_id != prompt.pk:
            raise ValidationFailed(
                f"response {response.pk} belongs to prompt {response.prompt_id}, "
                f"not to prompt {prompt.pk}"
            )
    a, b = sorted((response_x, response_y), key=lambda r: r.pk)
    k = labels_required if labels_required is not None else prompt.project.overlap
    if k < 1:
        raise ValidationFailed(f"labels_required={k} must be at least 1")
    return Comparison.objects.get_or_create(
        response_a=a,
        response_b=b,
        defaults={
            "project_id": prompt.project_id,
            "prompt": prompt,
            "origin": origin,
            "labels_required": k,
            "priority": priority,
            "random_key": (rng or random).random(),
            **fields,
        },
    )
