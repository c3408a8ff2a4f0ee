-- labelapp_queue_candidate: the candidate walk of ``next``
-- (labelapp/queue/leases.py). Its own function so the benchmark's naive baseline
-- (bench/naive_queue.py) can replace the candidate query alone.
--
-- Source of truth. Migrations install frozen copies of this text; after an edit, run
-- ``manage.py queue_sql_migration`` (labelapp/queue/__init__.py), else the system
-- check labelapp.E101 reports the drift.

CREATE OR REPLACE FUNCTION labelapp_queue_candidate(
    p_project bigint, p_user integer, p_now timestamptz, p_gold boolean,
    p_exclude bigint[]
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    found_id bigint;
BEGIN
    -- The candidate query. Walks comparison_queue_idx (or comparison_gold_queue_idx)
    -- in queue order: priority, then comparisons already started (finish what is
    -- begun), then the selection score (the project's strategy under the promoted
    -- reward model, labelapp/loop/selection.py; NULLS LAST: an unscored comparison
    -- comes after the scored, and with no scores at all, as for the random strategy,
    -- the order is the random_key order it always was), then random_key. Gold items
    -- are not scored (they grade annotators, they do not train the reward model), so
    -- their pass keeps its order. The free-slot test reads a snapshot taken before
    -- the row lock; it is a cheap pre-filter only, re-checked after locking
    -- (labelapp_queue_next, the lease statement). is_gold is a literal in each
    -- branch, so the gold pass keeps its partial index under a generic plan.
    IF p_gold THEN

        SELECT c.id INTO found_id
        FROM labelapp_comparison c
        WHERE c.project_id = p_project AND c.status = 'open' AND c.is_gold = true
          AND NOT (c.id = ANY(p_exclude))
          AND NOT EXISTS (
              SELECT 1 FROM labelapp_assignment mine
              WHERE mine.comparison_id = c.id AND mine.annotator_id = p_user
                AND (mine.state IN ('labelled', 'skipped')
                     OR (mine.state = 'leased' AND mine.expires_at > p_now)))
          AND c.labels_count + (
              SELECT count(*) FROM labelapp_assignment act
              WHERE act.comparison_id = c.id AND act.state = 'leased'
                AND act.expires_at > p_now) < c.labels_required
        ORDER BY c.priority DESC, c.labels_count DESC, c.random_key
        LIMIT 1
        FOR UPDATE OF c SKIP LOCKED;
    ELSE

        SELECT c.id INTO found_id
        FROM labelapp_comparison c
        WHERE c.project_id = p_project AND c.status = 'open' AND c.is_gold = false
          AND NOT (c.id = ANY(p_exclude))
          AND NOT EXISTS (
              SELECT 1 FROM labelapp_assignment mine
              WHERE mine.comparison_id = c.id AND mine.annotator_id = p_user
                AND (mine.state IN ('labelled', 'skipped')
                     OR (mine.state = 'leased' AND mine.expires_at > p_now)))
          AND c.labels_count + (
              SELECT count(*) FROM labelapp_assignment act
              WHERE act.comparison_id = c.id AND act.state = 'leased'
                AND act.expires_at > p_now) < c.labels_required
        ORDER BY c.priority DESC, c.labels_count DESC,
                 c.selection_score DESC NULLS LAST, c.random_key
        LIMIT 1
        FOR UPDATE OF c SKIP LOCKED;
    END IF;
    RETURN found_id;
END
$fn$;
