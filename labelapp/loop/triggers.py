"""Starting the loop's jobs: by hand, when enough comparisons completed since the
last reward model, and — coalesced — right after the label that completes one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from django.db import transaction

from labelapp import jobs
from labelapp.broker import publisher
from labelapp.errors import ValidationFailed
from labelapp.loop.overview import (
    comparisons_completed_since_last_version,
    reward_version_promoted,
)
from labelapp.loop.promotion import policy_audit_check
from labelapp.loop.strategy_gain import MIN_PAIRS as GAIN_MIN_PAIRS
from labelapp.loop.strategy_gain import labelled_count
from labelapp.models import Job, Project
from labelapp.tasknames import CHECK_TRIGGERS
from training.selection import is_random


def training_start(
    *, project: Project, created_by=None, if_active: str = "raise"
) -> Job:
    job, _ = jobs.job_enqueue(
        project=project,
        kind=Job.Kind.TRAIN_RM,
        created_by=created_by,
        if_active=if_active,
    )
    return job


def round_start(*, project: Project, created_by=None, if_active: str = "raise") -> Job:
    job, _ = jobs.job_enqueue(
        project=project, kind=Job.Kind.ROUND, created_by=created_by, if_active=if_active
    )
    return job


def scoring_start(
    *, project: Project, created_by=None, if_active: str = "raise"
) -> Job:
    """A score_comparisons job (labelapp.loop.selection), on demand; refused when
    the strategy needs scores and no reward model is promoted to give them."""
    if not is_random(project.selection_strategy) and not reward_version_promoted(
        project
    ):
        raise ValidationFailed(
            f"project {project.name!r} has no promoted reward model to score its "
            "comparisons with; train one first"
        )
    job, _ = jobs.job_enqueue(
        project=project,
        kind=Job.Kind.SCORE_COMPARISONS,
        created_by=created_by,
        if_active=if_active,
    )
    return job


def strategy_gain_start(
    *, project: Project, created_by=None, if_active: str = "raise"
) -> Job:
    """A strategy_gain job (labelapp.loop.strategy_gain): replay label selection on
    the project's labels to measure what its strategy saves. Refused while the
    project has too few human-labelled comparisons to replay."""
    have = labelled_count(project)
    if have < GAIN_MIN_PAIRS:
        raise ValidationFailed(
            f"project {project.name!r} has {have} human-labelled comparisons; "
            f"measuring a strategy's gain needs at least {GAIN_MIN_PAIRS}"
        )
    job, _ = jobs.job_enqueue(
        project=project,
        kind=Job.Kind.STRATEGY_GAIN,
        created_by=created_by,
        if_active=if_active,
    )
    return job


def scoring_maybe_start(project: Project) -> Job | None:
    """Score the project's open comparisons when its strategy needs scores and a
    promoted reward model can give them: after a promotion, a round, a change of
    strategy. An active scoring job is returned (it rescores with a version
    promoted while it ran)."""
    strategy = Project.objects.values_list("selection_strategy", flat=True).get(
        pk=project.pk
    )
    if is_random(strategy) or reward_version_promoted(project) is None:
        return None
    return scoring_start(project=project, if_active="return")


def training_maybe_trigger(*, project_id: int | None = None) -> int:
    """Start training where enough comparisons completed since the last version.

    Safe under many concurrent callers: the partial unique index on active jobs
    makes every caller after the first get the existing job back.
    """
    started = 0
    projects = Project.objects.all()
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    for project in projects:
        # A policy candidate whose audit pairs are all labelled is decided now.
        policy_audit_check(project)
        if Job.objects.filter(
            project=project, kind=Job.Kind.TRAIN_RM, status__in=Job.ACTIVE
        ).exists():
            continue
        if (
            comparisons_completed_since_last_version(project)
            < project.retrain_threshold
        ):
            continue
        with transaction.atomic():
            _, created = jobs.job_enqueue(project=project, kind=Job.Kind.TRAIN_RM)
        started += int(created)
    return started


Send = Callable[[str, Sequence[object], float], object]


class TriggerCoalescer:
    """Trigger checks, coalesced per process.

    Publishing a task costs ~1-3 ms of CPU, and at hundreds of labels/s a comparison
    completes every few milliseconds. The check counts everything committed when it
    runs, so one check scheduled to start *after* a commit covers that commit: a
    completion that finds such a check pending (due more than ``margin`` from now, a
    margin for clock skew between machines) sends nothing. Beat runs the same check
    periodically as the backstop — also for a check the broker did not take (the
    label never waits for it: ``labelapp.broker``).

    ``clock`` (monotonic seconds) and ``send(name, args, countdown)`` are injectable;
    ``reset()`` forgets what is pending.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        send: Send | None = None,
        delay: float = 1.0,
        margin: float = 0.25,
    ) -> None:
        self.clock, self.delay, self.margin = clock, delay, margin
        self._send = send or (
            lambda name, args, countdown: publisher.send(
                name, args=args, countdown=countdown
            )
        )
        self._due: dict[int, float] = {}
        self._lock = threading.Lock()

    def request(self, project_id: int) -> bool:
        """Schedule a check of ``project_id`` unless one pending covers it; True when
        a check was sent (or tried: a broker that is down only loses this one)."""
        with self._lock:
            now = self.clock()
            if self._due.get(project_id, 0.0) - now > self.margin:
                return False
            self._due[project_id] = now + self.delay
        self._send(CHECK_TRIGGERS, [project_id], self.delay)
        return True

    def reset(self) -> None:
        with self._lock:
            self._due.clear()


coalescer = TriggerCoalescer()


def training_check_soon(project_id: int) -> None:
    """After a commit that completed a comparison of ``project_id``: make sure a
    trigger check runs after it (label_submit calls this from on_commit)."""
    coalescer.request(project_id)
