"""services.projects: the one validator of project settings (the API serializer and
the settings page ask it), project creation by staff, and a change of k applied to
open work in one transaction."""

from __future__ import annotations

import pytest

from labelapp.api.serializers import ProjectSerializer
from labelapp.errors import PermissionDenied, ValidationFailed
from labelapp.models import Assignment, Comparison, Membership
from labelapp.queue import comparison_next_for
from labelapp.services.projects import (
    project_create_by,
    project_settings_problems,
    project_update,
    project_update_effects,
)
from tests.labelapp.conftest import make_comparisons, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("overlap", 0, "greater than or equal to 1"),
        ("overlap", 101, "less than or equal to 100"),
        ("lease_seconds", 5, "greater than or equal to 10"),
        ("gold_rate", 1.5, "less than or equal to 1.0"),
        ("top_p", 0.0, "greater than 0"),
        ("temperature", -1.0, "greater than or equal to 0.0"),
        ("pair_mix", {"bogus": 1}, "bogus: unknown strategy"),
        ("pair_mix", {"random": 0}, "must not all be 0"),
        ("rm_config", {"num_epochs": "x"}, "num_epochs: must be a number"),
        ("rm_config", {"warm_start": 1}, "warm_start: must be a boolean"),
        ("name", "   ", "needs a name"),
    ],
)
def test_one_validator_for_page_and_api(field, value, problem):
    problems = project_settings_problems({field: value})
    assert list(problems) == [field]
    assert problem in " ".join(problems[field])
    # The API's serializer says the same (it wraps the same rules).
    if field != "name":
        serializer = ProjectSerializer(data={"name": "x", field: value})
        assert not serializer.is_valid()
        assert problem in " ".join(str(e) for e in serializer.errors[field])


def test_good_settings_have_no_problems():
    good = {
        "overlap": 3,
        "top_p": 0.9,
        "pair_mix": {"random": 1},
        "rm_config": {"num_epochs": 2, "warm_start": True},
    }
    assert project_settings_problems(good) == {}


def test_staff_create_and_become_admin_members():
    staff = make_user(staff=True)
    project = project_create_by(by=staff, values={"name": " New one ", "overlap": 2})
    assert project.name == "New one" and project.overlap == 2
    assert Membership.objects.get(project=project, user=staff).role == "admin"
    with pytest.raises(ValidationFailed, match="exists already"):
        project_create_by(by=staff, values={"name": "New one"})
    with pytest.raises(ValidationFailed, match="overlap"):
        project_create_by(by=staff, values={"name": "Other", "overlap": 0})


def test_project_admins_do_not_create_projects():
    admin = make_user(project=make_project(), role="admin")
    with pytest.raises(PermissionDenied):
        project_create_by(by=admin, values={"name": "Mine"})


def test_raising_k_reopens_completed_comparisons():
    project = make_project(overlap=1)
    admin = make_user(project=project, role="admin")
    done, still_open = make_comparisons(project, 2)
    Comparison.objects.filter(pk=done.pk).update(status="complete", labels_count=1)
    own_k = make_comparisons(project, 1, start=5, labels_required=4)[0]
    effects = project_update_effects(project=project, changes={"overlap": 2})
    assert (effects.follow_k, effects.reopen, effects.complete) == (2, 1, 0)
    assert "1 completed comparison will be reopened" in " ".join(effects.summary())
    project, _ = project_update(project=project, by=admin, changes={"overlap": 2})
    assert project.overlap == 2
    done.refresh_from_db(), still_open.refresh_from_db(), own_k.refresh_from_db()
    assert (done.status, done.labels_required, done.completed_at) == ("open", 2, None)
    assert still_open.labels_required == 2
    assert own_k.labels_required == 4  # set on its own: keeps it


def test_lowering_k_completes_comparisons_with_enough_labels(
    django_capture_on_commit_callbacks,
):
    project = make_project(overlap=3)
    admin = make_user(project=project, role="admin")
    enough, short = make_comparisons(project, 2)
    Comparison.objects.filter(pk=enough.pk).update(labels_count=2)
    holder = make_user(project=project)
    lease = comparison_next_for(annotator=holder, project=project)
    Assignment.objects.filter(pk=lease.pk).update(comparison=enough)
    effects = project_update_effects(project=project, changes={"overlap": 2})
    assert "1 lease held on them will end" in " ".join(effects.summary())
    with django_capture_on_commit_callbacks() as sent:
        project_update(project=project, by=admin, changes={"overlap": 2})
    assert len(sent) == 1  # the retraining check, after commit
    enough.refresh_from_db(), short.refresh_from_db()
    assert enough.status == "complete" and enough.completed_at is not None
    assert short.status == "open"


def test_a_refused_change_writes_nothing():
    project = make_project(overlap=1)
    admin = make_user(project=project, role="admin")
    (c,) = make_comparisons(project, 1)
    with pytest.raises(ValidationFailed, match="top_p"):
        project_update(project=project, by=admin, changes={"overlap": 3, "top_p": 0})
    project.refresh_from_db(), c.refresh_from_db()
    assert project.overlap == 1 and c.labels_required == 1


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_only_admins_update(role):
    project = make_project()
    user = make_user(project=project, role=role)
    with pytest.raises(PermissionDenied):
        project_update(project=project, by=user, changes={"overlap": 2})
