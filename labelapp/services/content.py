"""Writes of content: projects, prompts, responses, comparisons (one function per
entity; bulk imports enforce the same invariants in labelapp.importing)."""

from __future__ import annotations

import random
from typing import Literal

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
from labelapp.services.gold import gold_choice_check


def project_create(*, name: str, **fields: object) -> Project:
    if not name.strip():
        raise ValidationFailed("a project needs a name")
    return Project.objects.create(name=name.strip(), **fields)


IfExists = Literal["return", "conflict"]


def _check_if_exists(if_exists: str) -> None:
    if if_exists not in ("return", "conflict"):
        # A programming error, not bad input: say so before anything is written.
        raise ValueError(f"if_exists must be 'return' or 'conflict', not {if_exists!r}")


def prompt_create(
    *,
    project: Project,
    messages: list[dict],
    external_id: str = "",
    source: str = "",
    if_exists: IfExists = "conflict",
) -> Prompt:
    """The project's prompt with these messages (unique by content hash). When it
    exists already, ``if_exists="conflict"`` raises ``Conflict`` (the API's 409) and
    ``"return"`` returns the stored one (get-or-create, for scripts and tests)."""
    _check_if_exists(if_exists)
    key = {"project": project, "content_hash": content_hash(messages)}
    if if_exists == "return":
        prompt, _ = Prompt.objects.get_or_create(
            **key,
            defaults={
                "messages": messages,
                "external_id": external_id,
                "source": source,
            },
        )
        return prompt
    try:
        with transaction.atomic():
            return Prompt.objects.create(
                **key, messages=messages, external_id=external_id, source=source
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
    if_exists: IfExists = "conflict",
) -> Response:
    """A response to ``prompt`` (unique per prompt by text hash); ``if_exists`` as
    for ``prompt_create``."""
    _check_if_exists(if_exists)
    if not text.strip():
        raise ValidationFailed("text: a response needs text")
    if round is not None and round.project_id != prompt.project_id:
        raise ValidationFailed("round_id: belongs to another project")
    key = {"prompt": prompt, "text_hash": text_hash(text)}
    values = {"text": text, "origin": origin, "model_ref": model_ref, "round": round}
    if if_exists == "return":
        response, _ = Response.objects.get_or_create(**key, defaults=values)
        return response
    try:
        with transaction.atomic():
            return Response.objects.create(**key, **values)
    except IntegrityError as exc:
        raise Conflict("This response text already exists for the prompt.") from exc


@transaction.atomic
def comparison_create(
    *,
    response_x: Response,
    response_y: Response,
    prompt: Prompt | None = None,
    project: Project | None = None,
    origin: str = Comparison.Origin.IMPORT,
    labels_required: int | None = None,
    priority: int = 0,
    is_gold: bool = False,
    gold_choice: str = "",
    if_exists: IfExists = "return",
    rng: random.Random | None = None,
    **fields: object,
) -> tuple[Comparison, bool]:
    """Create the comparison of two responses to one prompt, stored canonically (the
    lower response id is A; a gold answer given for (x, y) is flipped to match).

    ``prompt`` defaults to response_x's prompt; ``project``, when given, must be the
    prompt's. The database holds "the two responses differ" (a < b) and uniqueness;
    that both belong to the comparison's prompt needs a join, so it is checked here.
    When the pair already is a comparison, ``if_exists="return"`` returns it
    (get-or-create, for imports and scripts) and ``"conflict"`` raises ``Conflict``
    (the API's 409). Returns (comparison, created).
    """
    _check_if_exists(if_exists)
    # The messages name the API's fields (response_a/response_b are x/y as given),
    # since API clients see them verbatim.
    if response_x.pk == response_y.pk:
        raise ValidationFailed(
            "response_b: must differ from response_a "
            "(a comparison needs two different responses)"
        )
    if prompt is None:
        prompt = response_x.prompt
    for field, response in (("response_a", response_x), ("response_b", response_y)):
        if response.prompt_id != prompt.pk:
            raise ValidationFailed(
                f"{field}: both responses must answer the same prompt (response "
                f"{response.pk} belongs to prompt {response.prompt_id}, not to "
                f"prompt {prompt.pk})"
            )
    if project is not None and prompt.project_id != project.pk:
        raise ValidationFailed("response_a: belongs to another project")
    round_ = fields.get("round")
    if isinstance(round_, Round) and round_.project_id != prompt.project_id:
        raise ValidationFailed("round_id: belongs to another project")
    gold_choice_check(is_gold=is_gold, gold_choice=gold_choice)
    k = labels_required if labels_required is not None else prompt.project.overlap
    if k < 1:
        raise ValidationFailed(f"labels_required={k} must be at least 1")
    a, b = response_x, response_y
    if a.pk > b.pk:
        a, b = b, a
        gold_choice = {"a": "b", "b": "a"}.get(gold_choice, gold_choice)
    values = {
        "project_id": prompt.project_id,
        "prompt": prompt,
        "origin": origin,
        "labels_required": k,
        "priority": priority,
        "is_gold": is_gold,
        "gold_choice": gold_choice,
        "random_key": (rng or random).random(),
        **fields,
    }
    if if_exists == "return":
        return Comparison.objects.get_or_create(
            response_a=a, response_b=b, defaults=values
        )
    try:
        with transaction.atomic():
            return Comparison.objects.create(response_a=a, response_b=b, **values), True
    except IntegrityError as exc:
        raise Conflict("This pair is already a comparison.") from exc


# What may change after creation (the API's PATCH); the rest is fixed or derived.
COMPARISON_UPDATABLE = frozenset(
    {"priority", "labels_required", "status", "gold_choice"}
)


def comparison_update(*, comparison: Comparison, **changes: object) -> Comparison:
    """Change the updatable fields of ``comparison`` under its row lock, writing only
    those fields (a full save would write back aggregates read before a concurrent
    label changed them). A new ``gold_choice`` obeys the gold rule
    (``services.gold.gold_choice_check``)."""
    unknown = set(changes) - COMPARISON_UPDATABLE
    if unknown:
        # A programming error (the serializer lists the fields), not bad input.
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
        if "gold_choice" in changes:
            gold_choice_check(
                is_gold=locked.is_gold, gold_choice=str(changes["gold_choice"])
            )
        for field, value in changes.items():
            setattr(locked, field, value)
        if changes:
            locked.save(update_fields=sorted(changes))
    return locked
