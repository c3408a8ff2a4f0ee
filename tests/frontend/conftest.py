"""Fixtures for the annotator UI tests: a project with a member and a few pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from labelapp.models import (
    Comparison,
    Membership,
    Project,
    Prompt,
    Response,
    content_hash,
    text_hash,
)
from tests.frontend.dashboard_data import DemoProject, build_demo_project

PASSWORD = "correct-horse-battery-staple"


def client_for(user: AbstractBaseUser | None) -> Client:
    """A test client logged in as ``user`` (anonymous for None)."""
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def make_comparison(
    project: Project,
    messages: list[dict[str, str]],
    text_1: str,
    text_2: str,
    *,
    labels_required: int | None = None,
    random_key: float = 0.0,
) -> Comparison:
    prompt, _ = Prompt.objects.get_or_create(
        project=project,
        content_hash=content_hash(messages),
        defaults={"messages": messages},
    )
    first = Response.objects.create(
        prompt=prompt, text=text_1, text_hash=text_hash(text_1)
    )
    second = Response.objects.create(
        prompt=prompt, text=text_2, text_hash=text_hash(text_2)
    )
    # Canonical orientation: the lower response id is A.
    return Comparison.objects.create(
        project=project,
        prompt=prompt,
        response_a=first,
        response_b=second,
        labels_required=labels_required or project.overlap,
        random_key=random_key,
    )


@pytest.fixture
def demo() -> DemoProject:
    """The reviewer/admin pages' realistic project (tests.frontend.dashboard_data)."""
    return build_demo_project()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2 costs ~0.3 s per login; these tests are not about hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def annotator(django_user_model: Any) -> AbstractBaseUser:
    return django_user_model.objects.create_user(username="ann", password=PASSWORD)


@pytest.fixture
def project(annotator: AbstractBaseUser) -> Project:
    project = Project.objects.create(
        name="Helpfulness",
        overlap=1,
        guidelines="Prefer the **more helpful** answer.\n\n- be honest\n- be brief",
    )
    Membership.objects.create(project=project, user=annotator)
    return project


@pytest.fixture
def comparisons(project: Project) -> Callable[[int], list[Comparison]]:
    def make(n: int) -> list[Comparison]:
        return [
            make_comparison(
                project,
                [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": f"Question {i}: what is `x`?"},
                ],
                f"Answer {i} one",
                f"Answer {i} two\n\n```python\nprint({i})\n```",
                random_key=i / 100,
            )
            for i in range(n)
        ]

    return make
