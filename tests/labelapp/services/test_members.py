"""services.members: members by username, roles, removal, and one-time invites
(hashed token, expiry, used once)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from labelapp.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labelapp.models import Invite, Membership
from labelapp.services.members import (
    invite_accept,
    invite_create,
    member_add,
    member_remove,
    member_role_set,
    token_hash,
)
from tests.labelapp.conftest import make_project, make_user

pytestmark = pytest.mark.django_db
GOOD_PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def setup():
    project = make_project()
    admin = make_user(project=project, role="admin")
    return project, admin


def test_add_change_remove(setup):
    project, admin = setup
    bob = make_user("bob")
    m = member_add(project=project, by=admin, username="bob", role="reviewer")
    assert m.user == bob and m.role == "reviewer"
    with pytest.raises(Conflict, match="member already"):
        member_add(project=project, by=admin, username="bob", role="annotator")
    with pytest.raises(NotFound, match="no such user: 'nobody'"):
        member_add(project=project, by=admin, username="nobody", role="annotator")
    with pytest.raises(ValidationFailed, match="unknown role"):
        member_add(project=project, by=admin, username="bob", role="boss")
    member_role_set(project=project, by=admin, membership_id=m.pk, role="annotator")
    assert Membership.objects.get(pk=m.pk).role == "annotator"
    assert member_remove(project=project, by=admin, membership_id=m.pk) == "bob"
    assert not Membership.objects.filter(pk=m.pk).exists()


def test_the_last_admin_stays(setup):
    project, admin = setup
    mine = Membership.objects.get(project=project, user=admin)
    with pytest.raises(Conflict, match="last admin"):
        member_role_set(
            project=project, by=admin, membership_id=mine.pk, role="reviewer"
        )
    with pytest.raises(Conflict, match="last admin"):
        member_remove(project=project, by=admin, membership_id=mine.pk)
    # Staff administer every project, so they may.
    staff = make_user(staff=True)
    member_remove(project=project, by=staff, membership_id=mine.pk)


def test_a_membership_of_another_project_is_not_found(setup):
    project, admin = setup
    other = make_user(project=make_project())
    theirs = Membership.objects.get(user=other)
    with pytest.raises(NotFound):
        member_remove(project=project, by=admin, membership_id=theirs.pk)


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_only_admins_manage_members(setup, role):
    project, _admin = setup
    user = make_user(project=project, role=role)
    make_user("carol")
    with pytest.raises(PermissionDenied):
        member_add(project=project, by=user, username="carol", role="annotator")
    with pytest.raises(PermissionDenied):
        invite_create(project=project, by=user, role="annotator")


def test_invite_creates_the_account_once(setup):
    project, admin = setup
    invite, token = invite_create(project=project, by=admin, role="reviewer")
    stored = Invite.objects.get(pk=invite.pk)
    assert stored.token_hash == token_hash(token) and token not in stored.token_hash
    user = invite_accept(token=token, username="newbie", password=GOOD_PASSWORD)
    assert user.check_password(GOOD_PASSWORD)
    assert Membership.objects.get(project=project, user=user).role == "reviewer"
    stored.refresh_from_db()
    assert stored.used_by == user and stored.used_at is not None
    with pytest.raises(NotFound, match="used, or it expired"):
        invite_accept(token=token, username="second", password=GOOD_PASSWORD)
    assert not get_user_model().objects.filter(username="second").exists()


def test_expired_and_unknown_invites(setup):
    project, admin = setup
    _invite, token = invite_create(project=project, by=admin, role="annotator")
    later = lambda: timezone.now() + timedelta(days=8)  # noqa: E731
    with pytest.raises(NotFound):
        invite_accept(token=token, username="late", password=GOOD_PASSWORD, now=later)
    with pytest.raises(NotFound):
        invite_accept(token="not-a-token", username="x", password=GOOD_PASSWORD)


def test_bad_account_details_keep_the_invite(setup):
    project, admin = setup
    make_user("taken")
    _invite, token = invite_create(project=project, by=admin, role="annotator")
    with pytest.raises(Conflict, match="taken"):
        invite_accept(token=token, username="Taken", password=GOOD_PASSWORD)
    with pytest.raises(ValidationFailed):
        invite_accept(token=token, username="has space!", password=GOOD_PASSWORD)
    # The link still works after refused attempts.
    invite_accept(token=token, username="fine", password=GOOD_PASSWORD)


@pytest.mark.django_db(transaction=True)
def test_two_people_racing_on_one_link_make_one_account():
    project = make_project()
    admin = make_user(project=project, role="admin")
    _invite, token = invite_create(project=project, by=admin, role="annotator")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def accept(name: str) -> None:
        barrier.wait()
        try:
            invite_accept(token=token, username=name, password=GOOD_PASSWORD)
            results.append("ok")
        except NotFound:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=accept, args=(n,)) for n in ("p1", "p2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused"]
    assert Membership.objects.filter(project=project, role="annotator").count() == 1
