"""``next``: lease the next comparison to an annotator (labelapp_queue_next, whose SQL
is sql/next.sql and sql/candidate.sql)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection

from labelapp.db import loaded, prepared_cursor
from labelapp.errors import NotFound
from labelapp.models import Assignment, Comparison, Project, Prompt, Response
from labelapp.queue.assignments import _ASSIGNMENT_COLUMNS, _assignment, _now

# How many locked-but-full candidates ``next`` steps over before giving up on a pass.
# Each step is one short indexed query; in practice one or two suffice.
_MAX_CANDIDATE_TRIES = 20


# ``next`` is one call of labelapp_queue_next (sql/next.sql, which holds the SQL and
# a comment at each statement on the race it closes): lock the membership row, close
# the annotator's lapsed leases, resume a held lease, else walk the queue
# (labelapp_queue_candidate: FOR UPDATE SKIP LOCKED) and lease the first candidate
# whose free slot survives the re-check under its row lock. One round trip instead of
# six; each statement in the function still takes its own snapshot (READ COMMITTED,
# VOLATILE), as the separate round trips did. The random draws are made here, before
# the call, so tests control them: first the gold draw, then the swap.
_NEXT_SQL = """
SELECT * FROM labelapp_queue_next(
    %(project_id)s::bigint, %(user_id)s::integer, %(now)s::timestamptz,
    %(exclude)s::bigint[], %(max_leases)s::integer, %(gold_draw)s::float8,
    %(swapped)s::boolean, %(max_tries)s::integer)
"""


def _assignment_with_payload(row: Sequence[Any]) -> Assignment:
    """Assignment from ``_ASSIGNMENT_COLUMNS`` + the payload (prompt id, response
    ids, messages, texts: labelapp_queue_next's columns), with its comparison,
    prompt and responses attached, so assignment_payload needs no query."""
    assignment = _assignment(row)
    prompt_id, a_id, b_id, messages, a_text, b_text = row[len(_ASSIGNMENT_COLUMNS) :]
    messages_field = Prompt._meta.get_field("messages")
    comparison = loaded(
        Comparison,
        {
            "id": assignment.comparison_id,
            "prompt_id": prompt_id,
            "response_a_id": a_id,
            "response_b_id": b_id,
        },
    )
    comparison.prompt = loaded(
        Prompt,
        {
            "id": prompt_id,
            "messages": messages_field.from_db_value(messages, None, connection),
        },
    )
    comparison.response_a = loaded(Response, {"id": a_id, "text": a_text})
    comparison.response_b = loaded(Response, {"id": b_id, "text": b_text})
    assignment.comparison = comparison
    return assignment


def comparison_next_for(
    *,
    annotator: AbstractBaseUser,
    project: Project | int,
    now: datetime | None = None,
    rng: random.Random | None = None,
    exclude_assignment_ids: Collection[int] = (),
    max_leases: int = 1,
) -> Assignment | None:
    """Lease the next comparison of ``project`` (a Project or its id) to
    ``annotator``; None when nothing is left for them (or their membership is
    paused). Raises NotFound for non-members and unknown projects. The returned
    assignment carries its comparison, prompt and responses (assignment_payload
    serves them without a query).

    ``exclude_assignment_ids`` and ``max_leases`` serve the annotator page's prefetch:
    it shows one pair while holding the next one, so it asks for a lease other than
    the ones it names, and may hold up to ``max_leases`` at once (None when at the
    cap). The defaults keep the API's behaviour: one lease, resumed until done."""
    now = _now(now)
    rng = rng or random.Random()
    project_id = project if isinstance(project, int) else project.pk
    gold_draw = rng.random()
    swapped = rng.random() < 0.5
    with prepared_cursor() as cursor:
        cursor.execute(
            _NEXT_SQL,
            {
                "project_id": project_id,
                "user_id": annotator.pk,
                "now": now,
                "exclude": sorted(exclude_assignment_ids),
                "max_leases": max_leases,
                "gold_draw": gold_draw,
                "swapped": swapped,
                "max_tries": _MAX_CANDIDATE_TRIES,
            },
        )
        row = cursor.fetchone()
    outcome = row[0]
    if outcome == "not_found":
        raise NotFound("Project not found.")
    if outcome == "none":
        return None
    return _assignment_with_payload(row[1:])
