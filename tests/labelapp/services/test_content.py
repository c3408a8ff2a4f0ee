"""services.content: prompts, responses and comparisons, one create per entity,
each either refusing a duplicate (the API's 409) or returning the stored row."""

from __future__ import annotations

import pytest

from labelapp.errors import Conflict, ValidationFailed
from labelapp.models import Comparison, Prompt, Response
from labelapp.services.content import (
    comparison_create,
    prompt_create,
    response_create,
)

pytestmark = pytest.mark.django_db


def test_prompt_create_conflict_or_return(prompt):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(Conflict, match="prompt already exists"):
        prompt_create(project=prompt.project, messages=messages)
    same = prompt_create(project=prompt.project, messages=messages, if_exists="return")
    assert same == prompt and Prompt.objects.count() == 1
    new = prompt_create(
        project=prompt.project,
        messages=[{"role": "user", "content": "new"}],
        external_id="x-1",
        source="test",
        if_exists="return",
    )
    assert (new.external_id, new.source) == ("x-1", "test")
    with pytest.raises(ValueError, match="if_exists must be"):
        prompt_create(project=prompt.project, messages=messages, if_exists="x")


def test_response_create_conflict_or_return(prompt):
    r = response_create(prompt=prompt, text="x")
    assert r.origin == Response.Origin.HUMAN
    with pytest.raises(Conflict, match="already exists for the prompt"):
        response_create(prompt=prompt, text="x")
    assert response_create(prompt=prompt, text="x", if_exists="return") == r
    with pytest.raises(ValidationFailed, match="text: a response needs text"):
        response_create(prompt=prompt, text="  ")
    assert Response.objects.count() == 1


def test_comparison_create_is_canonical_and_get_or_create(prompt):
    r1 = response_create(prompt=prompt, text="one")
    r2 = response_create(prompt=prompt, text="two")
    comparison, created = comparison_create(prompt=prompt, response_x=r2, response_y=r1)
    assert created and (comparison.response_a, comparison.response_b) == (r1, r2)
    assert comparison.labels_required == prompt.project.overlap
    again, created = comparison_create(prompt=prompt, response_x=r1, response_y=r2)
    assert again == comparison and not created
    with pytest.raises(Conflict, match="already a comparison"):
        comparison_create(
            prompt=prompt, response_x=r1, response_y=r2, if_exists="conflict"
        )
    with pytest.raises(ValueError, match="if_exists must be"):
        comparison_create(prompt=prompt, response_x=r1, response_y=r2, if_exists="x")


def test_comparison_responses_must_belong_to_its_prompt(prompt):
    other = prompt_create(
        project=prompt.project, messages=[{"role": "user", "content": "other"}]
    )
    mine = response_create(prompt=prompt, text="one")
    theirs = response_create(prompt=other, text="two")
    with pytest.raises(ValidationFailed, match="belongs to prompt"):
        comparison_create(prompt=prompt, response_x=mine, response_y=theirs)
    with pytest.raises(ValidationFailed, match="two different responses"):
        comparison_create(prompt=prompt, response_x=mine, response_y=mine)
    assert not Comparison.objects.exists()
