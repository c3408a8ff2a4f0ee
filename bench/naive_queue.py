"""The baseline for bench/queue_bench.py: a naive "next" in the style of many labelling
tools (and Label Studio's plain path): count labels and leases per row on the fly,
ORDER BY a computed count (no index can serve it), NOT EXISTS for the annotator's own
work, and a blocking FOR UPDATE (no SKIP LOCKED), so concurrent annotators queue on
the same first row. Loaded only into benchmark servers, via gunicorn_naive.py."""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from labelapp import queue

NAIVE_SQL = """
SELECT c.id FROM labelapp_comparison c
WHERE c.project_id = %(project_id)s AND c.status = 'open' AND c.is_gold = %(gold)s
  AND NOT EXISTS (SELECT 1 FROM labelapp_label l
                  WHERE l.comparison_id = c.id AND l.annotator_id = %(user_id)s)
  AND NOT EXISTS (SELECT 1 FROM labelapp_assignment s
                  WHERE s.comparison_id = c.id AND s.annotator_id = %(user_id)s
                    AND s.state = 'skipped')
  AND (SELECT count(*) FROM labelapp_label l WHERE l.comparison_id = c.id)
    + (SELECT count(*) FROM labelapp_assignment a WHERE a.comparison_id = c.id
         AND a.state = 'leased' AND a.expires_at > %(now)s) < c.labels_required
ORDER BY c.priority DESC,
         (SELECT count(*) FROM labelapp_label l WHERE l.comparison_id = c.id) DESC,
         c.random_key
LIMIT 1
FOR UPDATE OF c
"""


def naive_pick_candidate(
    *, project_id: int, user_id: int, gold: bool, now: datetime, exclude: list[int]
) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            NAIVE_SQL,
            {"project_id": project_id, "user_id": user_id, "gold": gold, "now": now},
        )
        row = cursor.fetchone()
    # The lease statement that follows re-checks the free slot after the lock, as for
    # the real query: even the naive version must not over-lease. A full row is not
    # excluded on the next try (naive): the loop gives up after a few.
    return None if row is None else row[0]


def install() -> None:
    queue._pick_candidate = naive_pick_candidate
