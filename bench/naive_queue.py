"""The baseline for bench/queue_bench.py: a naive "next" in the style of many labelling
tools (and Label Studio's plain path): count labels and leases per row on the fly,
ORDER BY a computed count (no index can serve it), NOT EXISTS for the annotator's own
work, and a blocking FOR UPDATE (no SKIP LOCKED), so concurrent annotators queue on
the same first row.

install() replaces the queue's candidate query (the SQL function
labelapp_queue_candidate, labelapp/queue/sql/candidate.sql) in the benchmark's
database with this one; the lease statement that follows still re-checks the free slot under the row lock, so
even the naive version never over-leases. A full row is not excluded on the next try
(naive): the queue gives up after its tries. Only ever run against a benchmark
database: the bench drops it afterwards."""

from __future__ import annotations

import psycopg

NAIVE_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION labelapp_queue_candidate(
    p_project bigint, p_user integer, p_now timestamptz, p_gold boolean,
    p_exclude bigint[]
) RETURNS bigint LANGUAGE sql VOLATILE AS $fn$
SELECT c.id FROM labelapp_comparison c
WHERE c.project_id = p_project AND c.status = 'open' AND c.is_gold = p_gold
  AND NOT EXISTS (SELECT 1 FROM labelapp_label l
                  WHERE l.comparison_id = c.id AND l.annotator_id = p_user)
  AND NOT EXISTS (SELECT 1 FROM labelapp_assignment s
                  WHERE s.comparison_id = c.id AND s.annotator_id = p_user
                    AND s.state = 'skipped')
  AND (SELECT count(*) FROM labelapp_label l WHERE l.comparison_id = c.id)
    + (SELECT count(*) FROM labelapp_assignment a WHERE a.comparison_id = c.id
         AND a.state = 'leased' AND a.expires_at > p_now) < c.labels_required
ORDER BY c.priority DESC,
         (SELECT count(*) FROM labelapp_label l WHERE l.comparison_id = c.id) DESC,
         c.random_key
LIMIT 1
FOR UPDATE OF c
$fn$
"""


def install(url: str) -> None:
    """Swap the naive candidate query into the benchmark database at ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(NAIVE_FUNCTION_SQL)
