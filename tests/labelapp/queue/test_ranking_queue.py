"""The ranking queue against real PostgreSQL (labelapp.queue.rankings): exact
overlap k under concurrency, held leases, expiry, skip, late rankings, gold mixed
in at the project's rate, and reclaim."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labelapp.errors import Conflict, NotFound
from labelapp.models import Ranking, RankingAssignment, RankingItem
from labelapp.queue import leases_reclaim
from labelapp.queue.rankings import ranking_item_lease_for, ranking_item_skip
from labelapp.services.content import prompt_create, response_create
from labelapp.services.gold import ranking_item_mark_gold
from labelapp.services.rankings import ranking_item_create, ranking_rank

from ..conftest import make_project, make_user
from .test_queue import SeqRng

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0)


def make_item(project, tag: str, *, n: int = 3, k: int | None = None):
    prompt = prompt_create(
        project=project, messages=[{"role": "user", "content": f"rank {tag}"}]
    )
    ids = [
        response_create(prompt=prompt, text=f"answer {i} {tag}").pk for i in range(n)
    ]
    return ranking_item_create(
        project=project, prompt_id=prompt.pk, response_ids=ids, labels_required=k
    )


def lease(user, project, now=T0, rng=None):
    return ranking_item_lease_for(
        annotator=user, project_id=project.pk, now=now, rng=rng
    )


def rank(user, item, now=T0):
    return ranking_rank(item_id=item.pk, annotator=user, tiers=[[0], [1]], now=now)


def live(item, now=T0) -> int:
    return RankingAssignment.objects.filter(
        item=item, state="leased", expires_at__gt=now
    ).count()


def test_next_leases_and_gives_the_held_item_back(project_k2):
    first, second = make_item(project_k2, "a"), make_item(project_k2, "b")
    me = make_user(project=project_k2)
    held = lease(me, project_k2)
    assert held.item_id == first.pk and held.state == "leased"
    assert held.expires_at == T0 + timedelta(seconds=project_k2.lease_seconds)
    # Asking again (a reload, a second tab) gives the same lease, not the next item.
    again = lease(me, project_k2, now=T0 + timedelta(seconds=5))
    assert again.pk == held.pk and again.item_id == first.pk
    assert RankingAssignment.objects.filter(annotator=me).count() == 1
    _, created = rank(me, first)
    assert created
    held.refresh_from_db()
    assert held.state == "ranked" and held.finished_at == T0
    assert lease(me, project_k2).item_id == second.pk


def test_never_more_leases_than_rankings_needed(project_k2):
    item = make_item(project_k2, "x")
    users = [make_user(project=project_k2) for _ in range(3)]
    assert lease(users[0], project_k2).item_id == item.pk
    assert lease(users[1], project_k2).item_id == item.pk
    assert lease(users[2], project_k2) is None  # both slots are leased
    assert live(item) == 2
    # A fourth annotator ranking it by id, without a lease, gets the 409.
    with pytest.raises(Conflict, match="leased to others"):
        rank(make_user(project=project_k2), item)


def test_lease_expiry_frees_the_slot(project_k2):
    item = make_item(project_k2, "x", k=1)
    slow, fast = make_user(project=project_k2), make_user(project=project_k2)
    assert lease(slow, project_k2).item_id == item.pk
    assert lease(fast, project_k2) is None
    later = T0 + timedelta(seconds=project_k2.lease_seconds + 1)
    taken = lease(fast, project_k2, now=later)
    assert taken is not None and taken.item_id == item.pk
    # The slow annotator's lease was closed by the item it sat on.
    assert RankingAssignment.objects.get(annotator=slow).state == "expired"
    # Their late ranking is refused: the slot is someone else's now.
    with pytest.raises(Conflict):
        rank(slow, item, now=later)
    rank(fast, item, now=later)
    item.refresh_from_db()
    assert (item.labels_count, item.status) == (1, RankingItem.Status.COMPLETE)


def test_late_ranking_kept_when_the_slot_is_still_free(project_k2):
    item = make_item(project_k2, "x", k=1)
    slow = make_user(project=project_k2)
    lease(slow, project_k2)
    later = T0 + timedelta(seconds=project_k2.lease_seconds + 60)
    _, created = rank(slow, item, now=later)
    assert created
    assert RankingAssignment.objects.get(annotator=slow).state == "ranked"


def test_an_expired_lease_of_ones_own_is_taken_again(project_k2):
    item = make_item(project_k2, "x", k=1)
    me = make_user(project=project_k2)
    first = lease(me, project_k2)
    later = T0 + timedelta(seconds=project_k2.lease_seconds + 1)
    again = lease(me, project_k2, now=later)
    assert again.pk == first.pk and again.item_id == item.pk
    assert again.state == "leased" and again.expires_at > later


def test_skip_releases_the_slot_and_is_never_served_again(project_k2):
    item = make_item(project_k2, "x", k=1)
    other = make_item(project_k2, "y", k=1)
    me, next_one = make_user(project=project_k2), make_user(project=project_k2)
    assert lease(me, project_k2).item_id == item.pk
    skipped = ranking_item_skip(item_id=item.pk, annotator=me, reason=" unclear ")
    assert skipped.state == "skipped" and skipped.skip_reason == "unclear"
    # Skipping twice is a no-op.
    assert ranking_item_skip(item_id=item.pk, annotator=me).state == "skipped"
    assert lease(next_one, project_k2).item_id == item.pk  # the slot is free
    assert lease(me, project_k2).item_id == other.pk  # never the skipped one again
    rank(me, other)
    with pytest.raises(Conflict, match="ranked"):
        ranking_item_skip(item_id=other.pk, annotator=me)
    with pytest.raises(NotFound):
        ranking_item_skip(item_id=10**12, annotator=me)


def test_paused_and_non_member(project_k2):
    make_item(project_k2, "x")
    assert lease(make_user(project=project_k2, paused=True), project_k2) is None
    with pytest.raises(NotFound):
        lease(make_user(), project_k2)
    with pytest.raises(NotFound):
        lease(make_user(staff=True), project_k2)  # staff get no queue either


def test_started_items_come_first(project_k2):
    fresh, started = make_item(project_k2, "fresh"), make_item(project_k2, "started")
    rank(make_user(project=project_k2), started)
    assert lease(make_user(project=project_k2), project_k2).item_id == started.pk
    assert fresh.pk < started.pk  # not the id order


def test_reclaim_marks_lapsed_ranking_leases(project_k2):
    make_item(project_k2, "x")
    held = lease(make_user(project=project_k2), project_k2)
    assert leases_reclaim(now=T0) == 0
    later = T0 + timedelta(seconds=project_k2.lease_seconds)
    assert leases_reclaim(now=later) == 1
    held.refresh_from_db()
    assert held.state == "expired" and held.finished_at == later


# --- gold --------------------------------------------------------------------------


def _gold(item):
    return ranking_item_mark_gold(
        item=item, tiers=[[item.response_ids[0]], [item.response_ids[1]]], by=None
    )


def test_gold_drawn_first_then_the_other_kind(project_k2):
    project_k2.gold_rate = 0.2
    project_k2.save()
    regular = make_item(project_k2, "regular")
    gold = _gold(make_item(project_k2, "gold"))
    me = make_user(project=project_k2)
    # Draw 0.5 >= 0.2: a regular item.
    assert lease(me, project_k2, rng=SeqRng(0.5)).item_id == regular.pk
    ranking_item_skip(item_id=regular.pk, annotator=me)
    # Draw 0.1 < 0.2: gold first.
    other = make_user(project=project_k2)
    assert lease(other, project_k2, rng=SeqRng(0.1)).item_id == gold.pk
    # No regular item left for me: gold is served as the fallback.
    assert lease(me, project_k2, rng=SeqRng(0.5)).item_id == gold.pk


def test_gold_rate_statistically(project_k2):
    project_k2.gold_rate = 0.25
    project_k2.save()
    for i in range(30):
        make_item(project_k2, f"r{i}")
        _gold(make_item(project_k2, f"g{i}"))
    rng = random.Random(7)
    me = make_user(project=project_k2)
    served = []
    for _ in range(40):
        held = lease(me, project_k2, rng=rng)
        served.append(held.item.is_gold)
        ranking_item_skip(item_id=held.item_id, annotator=me)
    rate = sum(served) / len(served)
    assert 0.1 <= rate <= 0.45, rate


def test_gold_rate_zero_serves_gold_only_when_nothing_else_is_left(project_k2):
    gold = _gold(make_item(project_k2, "gold"))
    regular = make_item(project_k2, "regular")
    me = make_user(project=project_k2)
    assert lease(me, project_k2, rng=SeqRng(0.0)).item_id == regular.pk
    rank(me, regular)
    assert lease(me, project_k2, rng=SeqRng(0.0)).item_id == gold.pk


# --- concurrency -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_twelve_annotators_rank_twenty_items_to_exactly_k():
    n_annotators, n_items, k = 12, 20, 2
    project = make_project(overlap=k)
    items = [make_item(project, f"c{i}") for i in range(n_items)]
    users = [make_user(project=project) for _ in range(n_annotators)]
    errors: list[BaseException] = []
    conflicts: list[int] = []
    ranked: Counter[int] = Counter()
    start = threading.Barrier(n_annotators)

    def work(user) -> None:
        rng = random.Random(user.pk)
        try:
            start.wait()
            while True:
                held = ranking_item_lease_for(
                    annotator=user, project_id=project.pk, rng=rng
                )
                if held is None:
                    return
                # Ask again sometimes, as a reload would: the same lease back.
                if rng.random() < 0.3:
                    again = ranking_item_lease_for(
                        annotator=user, project_id=project.pk, rng=rng
                    )
                    assert again is not None and again.pk == held.pk
                try:
                    _, created = ranking_rank(
                        item_id=held.item_id, annotator=user, tiers=[[1], [0, 2]]
                    )
                except Conflict:
                    conflicts.append(held.item_id)
                    return
                ranked[held.item_id] += created
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert conflicts == []  # a leased slot is never taken by someone else
    assert ranked == Counter({item.pk: k for item in items})
    for item in RankingItem.objects.filter(project=project):
        assert item.labels_count == k and item.status == RankingItem.Status.COMPLETE
    pairs = list(Ranking.objects.values_list("item_id", "annotator_id"))
    assert len(pairs) == n_items * k == len(set(pairs))  # nobody ranked twice
    # No leftover lease: every lease taken was consumed by its ranking.
    assert not RankingAssignment.objects.filter(state="leased").exists()
    assert RankingAssignment.objects.filter(state="ranked").count() == n_items * k


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_twelve_annotators_asking_at_once_get_exactly_k_leases():
    project = make_project(overlap=3)
    item = make_item(project, "only")
    users = [make_user(project=project) for _ in range(12)]
    got: list[int | None] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(users))

    def work(user) -> None:
        try:
            start.wait()
            held = ranking_item_lease_for(annotator=user, project_id=project.pk)
            got.append(held.item_id if held else None)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    # Never more than k at once. Fewer is possible: an annotator whose candidate
    # query met the row locked by another's lease skips it (SKIP LOCKED) rather
    # than wait, and is told "nothing now"; asking again fills the free slots.
    assert got.count(item.pk) <= 3
    now = timezone.now()
    for user in users:
        ranking_item_lease_for(annotator=user, project_id=project.pk, now=now)
    assert live(item, now=now) == 3
    assert RankingAssignment.objects.filter(item=item).count() == 3


@pytest.fixture
def project_k2():
    return make_project(overlap=2)
