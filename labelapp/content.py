"""Writes for content created through the API: prompts, responses and comparisons.
Bulk imports live elsewhere; these enforce the same invariants one row at a time."""

from __future__ import annotations

import random

from django.db import IntegrityError, transaction

from labelapp.errors import Conflict, ValidationFailed
from labelapp.models import (
    Comparison,
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


def comparison_create(
    *,
    project: Project,
    response_1: Response,
    response_2: Response,
    origin: str = Comparison.Origin.IMPORT,
    priority: int = 0,
    labels_required: int | None = None,
    is_gold: bool = False,
    gold_choice: str = "",
    round: Round | None = None,
    rng: random.Random | None = None,
) -> Comparison:
    """Store the pair in canonical orientation (lower response id is A); a gold
    answer given for (response_1, response_2) is flipped to match."""
    if response_1.pk == response_2.pk:
        raise ValidationFailed("response_b: must differ from response_a")
    if response_1.prompt_id != response_2.prompt_id:
        raise ValidationFailed("response_b: both responses must answer the same prompt")
    prompt = response_1.prompt
    if prompt.project_id != project.pk:
        raise ValidationFailed("response_a: belongs to another project")
    if is_gold and not gold_choice:
        raise ValidationFailed("gold_choice: required for a gold comparison")
    a, b = response_1, response_2
    if a.pk > b.pk:
        a, b = b, a
        gold_choice = {"a": "b", "b": "a"}.get(gold_choice, gold_choice)
    try:
        with transaction.atomic():
            return Comparison.objects.create(
                project=project,
                prompt=prompt,
                response_a=a,
                response_b=b,
                origin=origin,
                priority=priority,
                labels_required=labels_required or project.overlap,
                is_gold=is_gold,
                gold_choice=gold_choice,
                round=round,
                random_key=(rng or random.Random()).random(),
            )
    except IntegrityError as exc:
        raise Conflict("This pair is already a comparison.") from exc
