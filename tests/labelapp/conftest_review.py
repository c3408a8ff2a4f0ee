"""Builders for the quality and export tests (imported explicitly, not a conftest
plugin, so they cannot collide with fixtures of other test modules).

Every name starts with ``review_`` for the same reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model

from labelapp.models import (
    Choice,
    Comparison,
    Label,
    Membership,
    Project,
    Prompt,
    Response,
    content_hash,
    text_hash,
)
from labelapp.services.aggregates import comparison_aggregate_refresh

CHOICE_P_A = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: None}


def review_user(name: str) -> Any:
    # No password: hashing one costs ~0.3 s per user with the default hasher.
    return get_user_model().objects.create_user(username=name, password=None)


def review_project(name: str = "review-demo", **kwargs: Any) -> Project:
    return Project.objects.create(name=name, **kwargs)


def review_prompt(project: Project, messages: Sequence[dict] | str) -> Prompt:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    msgs = list(messages)
    prompt, _ = Prompt.objects.get_or_create(
        project=project,
        content_hash=content_hash(msgs),
        defaults={"messages": msgs, "source": "review-tests"},
    )
    return prompt


def review_response(prompt: Prompt, text: str, **kwargs: Any) -> Response:
    resp, _ = Response.objects.get_or_create(
        prompt=prompt, text_hash=text_hash(text), defaults={"text": text, **kwargs}
    )
    return resp


def review_comparison(
    project: Project,
    prompt: Prompt | str | list[dict],
    text_a: str,
    text_b: str,
    **kwargs: Any,
) -> Comparison:
    """A comparison of two new responses; ``text_a`` is created first, so it gets the
    lower id and is the canonical A."""
    if not isinstance(prompt, Prompt):
        prompt = review_prompt(project, prompt)
    reward_a = kwargs.pop("reward_a", None)
    reward_b = kwargs.pop("reward_b", None)
    extra = kwargs.pop("response_kwargs", {})
    ra = review_response(prompt, text_a, reward=reward_a, **extra)
    rb = review_response(prompt, text_b, reward=reward_b, **extra)
    assert ra.pk < rb.pk
    kwargs.setdefault("labels_required", project.overlap)
    return Comparison.objects.create(
        project=project, prompt=prompt, response_a=ra, response_b=rb, **kwargs
    )


def review_label(
    comparison: Comparison,
    user: Any,
    choice: str,
    *,
    strength: int | None = None,
    **kwargs: Any,
) -> Label:
    kwargs.setdefault("p_a", CHOICE_P_A[Choice(choice)])
    return Label.objects.create(
        comparison=comparison,
        annotator=user,
        choice=choice,
        strength=strength,
        **kwargs,
    )


def review_gold_project(**project_fields: Any) -> tuple[Project, Any, Any, Any]:
    """A project with a gold bar of 75 % over 4 items and three members: "good" (all
    right, slow), "bad" (1 of 4 right, fast) and "few" (2 gold labels, under the
    minimum count)."""
    project = review_project(gold_min_count=4, gold_min_accuracy=0.75, **project_fields)
    good, bad, few = review_user("good"), review_user("bad"), review_user("few")
    for u in (good, bad, few):
        Membership.objects.create(project=project, user=u)
    for i in range(4):
        c = review_comparison(
            project, f"g{i}", f"ga{i}", f"gb{i}", is_gold=True, gold_choice="a"
        )
        review_label(c, good, "a", duration_ms=8000, shown_swapped=bool(i % 2))
        review_label(c, bad, "a" if i == 0 else "b", duration_ms=1000)
        if i < 2:
            review_label(c, few, "b", duration_ms=5000)
    return project, good, bad, few


def review_refresh(comparison: Comparison) -> Comparison:
    """Re-aggregate one comparison the way label_review does."""
    comparison_aggregate_refresh(comparison)
    comparison.refresh_from_db()
    return comparison
