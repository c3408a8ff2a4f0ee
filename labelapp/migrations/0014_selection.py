"""Selection for the human queue (issue 17): each project's selection strategy, each
comparison's selection score, the queue index ordered by it, the score_comparisons
job kind, and labelapp/queue/sql/*.sql as they were when this migration was written
(manage.py queue_sql_migration, then the schema operations added by hand). Frozen
copies: a later edit of the files needs a new migration."""

from django.db import migrations, models

import labelapp.models.common

# File -> its text, installed by this migration.
QUEUE_SQL = {
    "candidate.sql": r"""-- labelapp_queue_candidate: the candidate walk of ``next``
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
""",
    "next.sql": r"""-- labelapp_queue_next: ``next`` of the annotation queue as one PostgreSQL
-- function, one round trip per request instead of six (BEGIN, four statements,
-- COMMIT). The statements and the races they close are those that
-- labelapp/queue/__init__.py describes; each is a separate statement so each takes
-- a fresh snapshot (READ COMMITTED, VOLATILE function), as separate round trips do.
--
-- Source of truth. Migrations install frozen copies of this text; after an edit, run
-- ``manage.py queue_sql_migration`` (labelapp/queue/__init__.py), else the system
-- check labelapp.E101 reports the drift.

CREATE OR REPLACE FUNCTION labelapp_queue_next(
    p_project bigint, p_user integer, p_now timestamptz, p_exclude bigint[],
    p_max_leases integer, p_gold_draw double precision, p_swapped boolean,
    p_max_tries integer
) RETURNS TABLE (
    outcome text,
    id bigint, comparison_id bigint, annotator_id integer, project_id bigint,
    state varchar, swapped boolean, leased_at timestamptz, expires_at timestamptz,
    finished_at timestamptz,
    prompt_id bigint, response_a_id bigint, response_b_id bigint, messages jsonb,
    a_text text, b_text text
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    m record;
    held record;
    held_count integer := 0;
    want_gold boolean;
    gold boolean;
    candidate bigint;
    tried bigint[];
    expires timestamptz;
BEGIN
    -- 1. The annotator's membership row, locked, with the project's settings.
    -- Race closed: the same annotator calling next twice at once (double click,
    -- two tabs). Locking their membership row serialises their calls, so the second
    -- sees the lease the first made (the statements below run after this lock, on
    -- fresh snapshots) and returns it instead of taking a second one.
    SELECT mm.paused, pr.gold_rate, pr.lease_seconds INTO m
    FROM labelapp_membership mm
    JOIN labelapp_project pr ON pr.id = mm.project_id
    WHERE mm.project_id = p_project AND mm.user_id = p_user
    FOR UPDATE OF mm;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    IF m.paused THEN
        outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;

    -- 2. Close the annotator's own leases that ran out (theirs to close; others'
    -- are closed by the comparison they sit on, in 4, or by leases_reclaim()).
    UPDATE labelapp_assignment a
    SET state = 'expired', finished_at = p_now
    WHERE a.annotator_id = p_user AND a.project_id = p_project
      AND a.state = 'leased' AND a.expires_at <= p_now;

    -- 3. Their live leases, oldest first, with payloads: refresh-safe, the same
    -- lease comes back; one the caller already has (the page's prefetch names it)
    -- is passed over, and a new one is taken only below the cap.
    FOR held IN
        SELECT a.id, a.comparison_id, a.annotator_id, a.project_id, a.state,
               a.swapped, a.leased_at, a.expires_at, a.finished_at,
               c.prompt_id, c.response_a_id, c.response_b_id, p.messages,
               ra.text AS a_text, rb.text AS b_text
        FROM labelapp_assignment a
JOIN labelapp_comparison c ON c.id = a.comparison_id
JOIN labelapp_prompt p ON p.id = c.prompt_id
JOIN labelapp_response ra ON ra.id = c.response_a_id
JOIN labelapp_response rb ON rb.id = c.response_b_id
        WHERE a.annotator_id = p_user AND a.project_id = p_project
          AND a.state = 'leased' AND a.expires_at > p_now
        ORDER BY a.leased_at, a.id
    LOOP
        IF NOT (held.id = ANY(p_exclude)) THEN
            outcome := 'held';
            id := held.id; comparison_id := held.comparison_id;
            annotator_id := held.annotator_id; project_id := held.project_id;
            state := held.state; swapped := held.swapped;
            leased_at := held.leased_at; expires_at := held.expires_at;
            finished_at := held.finished_at; prompt_id := held.prompt_id;
            response_a_id := held.response_a_id; response_b_id := held.response_b_id;
            messages := held.messages; a_text := held.a_text; b_text := held.b_text;
            RETURN NEXT;
            RETURN;
        END IF;
        held_count := held_count + 1;
    END LOOP;
    IF held_count >= p_max_leases THEN
        outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;

    -- Gold first when drawn, then the other kind as a fallback, so nothing that
    -- still needs labels is withheld just because of the draw.
    want_gold := m.gold_rate > 0 AND p_gold_draw < m.gold_rate;
    expires := p_now + make_interval(secs => m.lease_seconds);
    FOREACH gold IN ARRAY ARRAY[want_gold, NOT want_gold] LOOP
        tried := '{}';
        FOR attempt IN 1..p_max_tries LOOP
            candidate := labelapp_queue_candidate(
                p_project, p_user, p_now, gold, tried);
            EXIT WHEN candidate IS NULL;
            -- 4. With the candidate's row locked: re-check the free slot, close
            -- others' lapsed leases on it, take the lease, return it with its
            -- payload. No row back: the slot is gone; step on (the row stays
            -- locked until commit, harmless).
            --
            -- Race closed (free slot): two annotators' candidate queries run on the
            -- same snapshot, both see one free slot; the first leases and commits;
            -- the second then locks the row. PostgreSQL re-checks only the
            -- comparison row's own columns after the lock wait (a new lease does not
            -- touch that row), so without this recount, on this statement's fresh
            -- snapshot, the second would take a slot that no longer exists.
            --
            -- Re-leasing: (comparison, annotator) is unique, so an expired earlier
            -- lease of this annotator on this comparison is re-used by ON CONFLICT
            -- DO UPDATE. Race closed: the candidate query excluded comparisons they
            -- labelled or skipped, but on its snapshot; a late label on an expired
            -- lease may commit between that snapshot and our lock. DO UPDATE ...
            -- WHERE state = 'expired' re-checks the current row, so a labelled or
            -- skipped assignment is never turned back into a lease.
            RETURN QUERY
            WITH free AS (
                SELECT c.id
                FROM labelapp_comparison c
                WHERE c.id = candidate AND c.status = 'open'
                  AND c.labels_count + (
                      SELECT count(*) FROM labelapp_assignment act
                      WHERE act.comparison_id = c.id AND act.state = 'leased'
                        AND act.expires_at > p_now) < c.labels_required
            ),
            reclaimed AS (
                UPDATE labelapp_assignment r
                SET state = 'expired', finished_at = p_now
                WHERE r.comparison_id = candidate AND r.annotator_id <> p_user
                  AND r.state = 'leased' AND r.expires_at <= p_now
            ),
            a AS (
                INSERT INTO labelapp_assignment AS x
                    (comparison_id, annotator_id, project_id, state, swapped,
                     leased_at, expires_at, finished_at)
                SELECT free.id, p_user, p_project, 'leased', p_swapped, p_now,
                       expires, NULL
                FROM free
                ON CONFLICT ON CONSTRAINT assignment_unique DO UPDATE
                SET state = 'leased', project_id = EXCLUDED.project_id,
                    swapped = EXCLUDED.swapped, leased_at = EXCLUDED.leased_at,
                    expires_at = EXCLUDED.expires_at, finished_at = NULL
                WHERE x.state = 'expired'
                RETURNING x.id, x.comparison_id, x.annotator_id, x.project_id,
                          x.state, x.swapped, x.leased_at, x.expires_at,
                          x.finished_at
            )
            SELECT 'leased'::text, a.id, a.comparison_id, a.annotator_id,
                   a.project_id, a.state, a.swapped, a.leased_at, a.expires_at,
                   a.finished_at, c.prompt_id, c.response_a_id, c.response_b_id,
                   p.messages, ra.text, rb.text
            FROM a
JOIN labelapp_comparison c ON c.id = a.comparison_id
JOIN labelapp_prompt p ON p.id = c.prompt_id
JOIN labelapp_response ra ON ra.id = c.response_a_id
JOIN labelapp_response rb ON rb.id = c.response_b_id;
            IF FOUND THEN
                RETURN;
            END IF;
            tried := tried || candidate;
        END LOOP;
    END LOOP;
    outcome := 'none';
    RETURN NEXT;
END
$fn$;
""",
}

# What the previous migration installed: the reverse.
PREVIOUS = {
    "candidate.sql": r"""-- labelapp_queue_candidate: the candidate walk of ``next``
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
    -- begun), then random_key. The free-slot test reads a snapshot taken before the
    -- row lock; it is a cheap pre-filter only, re-checked after locking
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
        ORDER BY c.priority DESC, c.labels_count DESC, c.random_key
        LIMIT 1
        FOR UPDATE OF c SKIP LOCKED;
    END IF;
    RETURN found_id;
END
$fn$;
""",
    "next.sql": r"""-- labelapp_queue_next: ``next`` of the annotation queue as one PostgreSQL
-- function, one round trip per request instead of six (BEGIN, four statements,
-- COMMIT). The statements and the races they close are those that
-- labelapp/queue/__init__.py describes; each is a separate statement so each takes
-- a fresh snapshot (READ COMMITTED, VOLATILE function), as separate round trips do.
--
-- Source of truth. Migrations install frozen copies of this text; after an edit, run
-- ``manage.py queue_sql_migration`` (labelapp/queue/__init__.py), else the system
-- check labelapp.E101 reports the drift.

CREATE OR REPLACE FUNCTION labelapp_queue_next(
    p_project bigint, p_user integer, p_now timestamptz, p_exclude bigint[],
    p_max_leases integer, p_gold_draw double precision, p_swapped boolean,
    p_max_tries integer
) RETURNS TABLE (
    outcome text,
    id bigint, comparison_id bigint, annotator_id integer, project_id bigint,
    state varchar, swapped boolean, leased_at timestamptz, expires_at timestamptz,
    finished_at timestamptz,
    prompt_id bigint, response_a_id bigint, response_b_id bigint, messages jsonb,
    a_text text, b_text text
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    m record;
    held record;
    held_count integer := 0;
    want_gold boolean;
    gold boolean;
    candidate bigint;
    tried bigint[];
    expires timestamptz;
BEGIN
    -- 1. The annotator's membership row, locked, with the project's settings.
    -- Race closed: the same annotator calling next twice at once (double click,
    -- two tabs). Locking their membership row serialises their calls, so the second
    -- sees the lease the first made (the statements below run after this lock, on
    -- fresh snapshots) and returns it instead of taking a second one.
    SELECT mm.paused, pr.gold_rate, pr.lease_seconds INTO m
    FROM labelapp_membership mm
    JOIN labelapp_project pr ON pr.id = mm.project_id
    WHERE mm.project_id = p_project AND mm.user_id = p_user
    FOR UPDATE OF mm;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    IF m.paused THEN
        outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;

    -- 2. Close the annotator's own leases that ran out (theirs to close; others'
    -- are closed by the comparison they sit on, in 4, or by leases_reclaim()).
    UPDATE labelapp_assignment a
    SET state = 'expired', finished_at = p_now
    WHERE a.annotator_id = p_user AND a.project_id = p_project
      AND a.state = 'leased' AND a.expires_at <= p_now;

    -- 3. Their live leases, oldest first, with payloads: refresh-safe, the same
    -- lease comes back; one the caller already has (the page's prefetch names it)
    -- is passed over, and a new one is taken only below the cap.
    FOR held IN
        SELECT a.id, a.comparison_id, a.annotator_id, a.project_id, a.state,
               a.swapped, a.leased_at, a.expires_at, a.finished_at,
               c.prompt_id, c.response_a_id, c.response_b_id, p.messages,
               ra.text AS a_text, rb.text AS b_text
        FROM labelapp_assignment a
JOIN labelapp_comparison c ON c.id = a.comparison_id
JOIN labelapp_prompt p ON p.id = c.prompt_id
JOIN labelapp_response ra ON ra.id = c.response_a_id
JOIN labelapp_response rb ON rb.id = c.response_b_id
        WHERE a.annotator_id = p_user AND a.project_id = p_project
          AND a.state = 'leased' AND a.expires_at > p_now
        ORDER BY a.leased_at, a.id
    LOOP
        IF NOT (held.id = ANY(p_exclude)) THEN
            outcome := 'held';
            id := held.id; comparison_id := held.comparison_id;
            annotator_id := held.annotator_id; project_id := held.project_id;
            state := held.state; swapped := held.swapped;
            leased_at := held.leased_at; expires_at := held.expires_at;
            finished_at := held.finished_at; prompt_id := held.prompt_id;
            response_a_id := held.response_a_id; response_b_id := held.response_b_id;
            messages := held.messages; a_text := held.a_text; b_text := held.b_text;
            RETURN NEXT;
            RETURN;
        END IF;
        held_count := held_count + 1;
    END LOOP;
    IF held_count >= p_max_leases THEN
        outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;

    -- Gold first when drawn, then the other kind as a fallback, so nothing that
    -- still needs labels is withheld just because of the draw.
    want_gold := m.gold_rate > 0 AND p_gold_draw < m.gold_rate;
    expires := p_now + make_interval(secs => m.lease_seconds);
    FOREACH gold IN ARRAY ARRAY[want_gold, NOT want_gold] LOOP
        tried := '{}';
        FOR attempt IN 1..p_max_tries LOOP
            candidate := labelapp_queue_candidate(
                p_project, p_user, p_now, gold, tried);
            EXIT WHEN candidate IS NULL;
            -- 4. With the candidate's row locked: re-check the free slot, close
            -- others' lapsed leases on it, take the lease, return it with its
            -- payload. No row back: the slot is gone; step on (the row stays
            -- locked until commit, harmless).
            --
            -- Race closed (free slot): two annotators' candidate queries run on the
            -- same snapshot, both see one free slot; the first leases and commits;
            -- the second then locks the row. PostgreSQL re-checks only the
            -- comparison row's own columns after the lock wait (a new lease does not
            -- touch that row), so without this recount, on this statement's fresh
            -- snapshot, the second would take a slot that no longer exists.
            --
            -- Re-leasing: (comparison, annotator) is unique, so an expired earlier
            -- lease of this annotator on this comparison is re-used by ON CONFLICT
            -- DO UPDATE. Race closed: the candidate query excluded comparisons they
            -- labelled or skipped, but on its snapshot; a late label on an expired
            -- lease may commit between that snapshot and our lock. DO UPDATE ...
            -- WHERE state = 'expired' re-checks the current row, so a labelled or
            -- skipped assignment is never turned back into a lease.
            RETURN QUERY
            WITH free AS (
                SELECT c.id
                FROM labelapp_comparison c
                WHERE c.id = candidate AND c.status = 'open'
                  AND c.labels_count + (
                      SELECT count(*) FROM labelapp_assignment act
                      WHERE act.comparison_id = c.id AND act.state = 'leased'
                        AND act.expires_at > p_now) < c.labels_required
            ),
            reclaimed AS (
                UPDATE labelapp_assignment r
                SET state = 'expired', finished_at = p_now
                WHERE r.comparison_id = candidate AND r.annotator_id <> p_user
                  AND r.state = 'leased' AND r.expires_at <= p_now
            ),
            a AS (
                INSERT INTO labelapp_assignment AS x
                    (comparison_id, annotator_id, project_id, state, swapped,
                     leased_at, expires_at, finished_at)
                SELECT free.id, p_user, p_project, 'leased', p_swapped, p_now,
                       expires, NULL
                FROM free
                ON CONFLICT ON CONSTRAINT assignment_unique DO UPDATE
                SET state = 'leased', project_id = EXCLUDED.project_id,
                    swapped = EXCLUDED.swapped, leased_at = EXCLUDED.leased_at,
                    expires_at = EXCLUDED.expires_at, finished_at = NULL
                WHERE x.state = 'expired'
                RETURNING x.id, x.comparison_id, x.annotator_id, x.project_id,
                          x.state, x.swapped, x.leased_at, x.expires_at,
                          x.finished_at
            )
            SELECT 'leased'::text, a.id, a.comparison_id, a.annotator_id,
                   a.project_id, a.state, a.swapped, a.leased_at, a.expires_at,
                   a.finished_at, c.prompt_id, c.response_a_id, c.response_b_id,
                   p.messages, ra.text, rb.text
            FROM a
JOIN labelapp_comparison c ON c.id = a.comparison_id
JOIN labelapp_prompt p ON p.id = c.prompt_id
JOIN labelapp_response ra ON ra.id = c.response_a_id
JOIN labelapp_response rb ON rb.id = c.response_b_id;
            IF FOUND THEN
                RETURN;
            END IF;
            tried := tried || candidate;
        END LOOP;
    END LOOP;
    outcome := 'none';
    RETURN NEXT;
END
$fn$;
""",
}


class Migration(migrations.Migration):
    dependencies = [("labelapp", "0013_project_sampler_backend")]

    operations = [
        migrations.RemoveIndex(model_name="comparison", name="comparison_queue_idx"),
        migrations.AddField(
            model_name="comparison",
            name="selection_score",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="project",
            name="selection_strategy",
            field=models.JSONField(
                default=labelapp.models.common.default_selection_strategy,
                help_text="random (the queue's random order), uncertainty, "
                'disagreement, gap, or a mix such as {"uncertainty": 0.5, '
                '"random": 0.5}.',
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("train_rm", "Reward-model training"),
                    ("round", "Rejection-sampling round"),
                    ("import", "Import"),
                    ("export", "Export"),
                    ("train_policy", "Policy training"),
                    ("score_comparisons", "Selection scoring"),
                ],
                max_length=32,
            ),
        ),
        migrations.AddIndex(
            model_name="comparison",
            index=models.Index(
                models.F("project"),
                models.OrderBy(models.F("priority"), descending=True),
                models.OrderBy(models.F("labels_count"), descending=True),
                models.OrderBy(
                    models.F("selection_score"), descending=True, nulls_last=True
                ),
                models.F("random_key"),
                condition=models.Q(("status", "open")),
                name="comparison_queue_idx",
            ),
        ),
        migrations.RunSQL(QUEUE_SQL["candidate.sql"], PREVIOUS["candidate.sql"]),
        migrations.RunSQL(QUEUE_SQL["next.sql"], PREVIOUS["next.sql"]),
    ]
