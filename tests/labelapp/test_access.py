"""labelapp.access: one answer per permission question, for every kind of user."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from labelapp import access

from .conftest import make_project, make_user

pytestmark = pytest.mark.django_db

KINDS = [
    "anonymous",
    "non_member",
    "annotator",
    "reviewer",
    "admin",
    "staff_non_member",
    "superuser_non_member",
]


@pytest.fixture
def people():
    project = make_project()
    other = make_project()
    users = {
        "anonymous": AnonymousUser(),
        "non_member": make_user(project=other, role="admin"),
        "annotator": make_user(project=project),
        "reviewer": make_user(project=project, role="reviewer"),
        "admin": make_user(project=project, role="admin"),
        # Django staff without superuser: the case the two old can_review functions
        # disagreed on (issue 13).
        "staff_non_member": make_user(staff=True, superuser=False),
        "superuser_non_member": make_user(staff=True),
    }
    return project, other, users


def row(*values):
    return dict(zip(KINDS, values, strict=True))


#        anon    non-m  annot  review admin  staff  superuser
EXPECTED = {
    "role_in": row(None, None, "annotator", "reviewer", "admin", "admin", "admin"),
    "can_view": row(False, False, True, True, True, True, True),
    "can_annotate": row(False, False, True, True, True, False, False),
    "can_review": row(False, False, False, True, True, True, True),
    "can_admin": row(False, False, False, False, True, True, True),
}  # fmt: skip


@pytest.mark.parametrize("question", sorted(EXPECTED))
@pytest.mark.parametrize("kind", KINDS)
def test_project_questions(people, question, kind):
    project, _other, users = people
    answer = getattr(access, question)(user=users[kind], project=project)
    assert answer == EXPECTED[question][kind]
    # A project id answers as the project does.
    assert getattr(access, question)(user=users[kind], project=project.pk) == answer


@pytest.mark.parametrize("kind", KINDS)
def test_project_querysets(people, kind):
    project, other, users = people
    user = users[kind]
    everything = {project.pk, other.pk}
    staff = kind in ("staff_non_member", "superuser_non_member")
    visible = set(access.visible_projects(user=user).values_list("pk", flat=True))
    reviewed = set(access.reviewed_projects(user=user).values_list("pk", flat=True))
    administered = set(
        access.administered_projects(user=user).values_list("pk", flat=True)
    )
    if staff:
        assert visible == reviewed == administered == everything
        assert access.project_ids_with_role(user=user) is None
        return
    mine = {"annotator": {project.pk}, "reviewer": {project.pk}, "admin": {project.pk}}
    assert visible == mine.get(kind, {other.pk} if kind == "non_member" else set())
    assert reviewed == (visible if kind != "annotator" else set())
    assert administered == (visible if kind in ("admin", "non_member") else set())


@pytest.mark.parametrize("kind", KINDS)
def test_user_questions(people, kind):
    _project, _other, users = people
    user = users[kind]
    staff = kind in ("staff_non_member", "superuser_non_member")
    assert access.is_staff(user=user) is staff
    assert access.can_create_projects(user=user) is staff
    assert access.can_review_own_label(user=user) is staff
    assert access.administers_any(user=user) is (
        staff or kind in ("admin", "non_member")
    )


def test_questions_are_keyword_only(people):
    project, _other, users = people
    with pytest.raises(TypeError):
        access.can_review(users["reviewer"], project)  # type: ignore[misc]
