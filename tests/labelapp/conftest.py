"""Fixtures for labelapp tests: a small project with prompts, responses and
comparisons, and users in each role."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labelapp.models import (
    Comparison,
    Membership,
    Project,
    Prompt,
    Response,
    content_hash,
    text_hash,
)
from labelapp.services.content import project_create, prompt_create

User = get_user_model()
_seq = itertools.count()


def make_project(**kwargs) -> Project:
    kwargs.setdefault("name", f"project-{next(_seq)}")
    return Project.objects.create(**kwargs)


def make_comparisons(
    project: Project, n: int, *, start: int = 0, **kwargs
) -> list[Comparison]:
    """n comparisons, each on its own prompt with two responses."""
    out = []
    for i in range(start, start + n):
        messages = [{"role": "user", "content": f"question {project.pk}-{i}"}]
        prompt = Prompt.objects.create(
            project=project, messages=messages, content_hash=content_hash(messages)
        )
        r1, r2 = (
            Response.objects.create(
                prompt=prompt, text=t, text_hash=text_hash(t), reward=0.5
            )
            for t in (f"answer one {i}", f"answer two {i}")
        )
        fields = {"labels_required": project.overlap, "random_key": (i * 0.618) % 1}
        fields.update(kwargs)
        out.append(
            Comparison.objects.create(
                project=project, prompt=prompt, response_a=r1, response_b=r2, **fields
            )
        )
    return out


def make_user(
    name: str | None = None,
    *,
    project: Project | None = None,
    role: str = "annotator",
    paused: bool = False,
    staff: bool = False,
    superuser: bool | None = None,
):
    """A user, a member of ``project`` in ``role`` when given. ``staff`` makes
    create_user's "admin" (is_staff and superuser); ``superuser=False`` with it makes
    Django staff alone."""
    user = User.objects.create_user(
        username=name or f"user-{next(_seq)}",
        password=None,  # unusable: hashing would dominate test time
        is_staff=staff,
        is_superuser=staff if superuser is None else superuser,
    )
    if project is not None:
        Membership.objects.create(project=project, user=user, role=role, paused=paused)
    return user


@pytest.fixture
def project(db) -> Project:
    return make_project(overlap=3, lease_seconds=600)


@pytest.fixture
def prompt(db) -> Prompt:
    """One prompt in a fresh project, made through the content services."""
    project = project_create(name=f"project-{next(_seq)}")
    return prompt_create(project=project, messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def comparisons(project) -> list[Comparison]:
    return make_comparisons(project, 5)


@pytest.fixture
def annotator(project):
    return make_user("ann", project=project)


@pytest.fixture
def user_factory(db) -> Callable:
    return make_user


@pytest.fixture
def api_client_for() -> Callable[..., APIClient]:
    def _client(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return _client
