"""The annotation queue: lease a comparison to an annotator, take their label, release.

Every function here is safe with many annotators hitting PostgreSQL at once. The
invariants, and where each race that could break them is closed:

* a comparison is never leased to more annotators at once than the labels it still
  needs: ``labels_count + active leases < labels_required``, checked *after* the
  comparison row is locked (the lease statement in labelapp_queue_next);
* an annotator never gets a comparison they labelled or skipped (filter in the
  candidate query, backed by the unique (comparison, annotator) constraints);
* one annotator asking twice (double click, two tabs) gets the same lease: their
  ``next`` calls are serialised on their Membership row;
* labels_count, status and the aggregates change in the same transaction as the label,
  under the comparison row lock, so a reader never sees a label without its count.

Lock order, everywhere: Membership -> Comparison -> Assignment. Nothing waits for a
comparison lock while holding an assignment lock, so these paths cannot deadlock;
``next`` only takes comparison locks with SKIP LOCKED, so annotators never queue
behind each other's candidate rows.

The hot paths are hand-written SQL, because per-request cost is dominated by round
trips and ORM overhead, not by the queries themselves. ``next`` is one call of a
PostgreSQL function (sql/next.sql: lock membership, close lapsed leases, resume a
held lease, pick a candidate, lease it); ``label`` is a few statements (lock the
comparison, read the assignment and the comparison's labels, write everything). Each
statement that must see data committed while we waited for a lock is a *separate*
statement after the locking one: in READ COMMITTED a statement reads one snapshot,
and a lock wait does not refresh what its subqueries saw.

Clock (``now``) and randomness (``rng``) are injected so tests control them.

Where things live: ``leases`` (next), ``label`` (with ``label_input``, the one
validator of label input), ``skip``, ``undo`` (undo and edit of one's own recent
label), ``reclaim`` (bulk lease
expiry), ``assignments`` (what they share: the assignment row, the comparison lock),
``sql/`` (the PL/pgSQL functions ``next`` calls), ``checks`` (the drift check),
``fastlane`` (the WSGI fast path for next and label).

To change queue policy (candidate order, the free-slot re-check, the gold fallback):
edit ``sql/*.sql``, then run ``manage.py queue_sql_migration``, which writes a new
migration embedding a frozen copy of the files' text (migrations never read the live
files, so history stays reproducible). Until that migration is applied, the system
check ``labelapp.E101`` (``manage.py check --database default``, and ``migrate``)
reports each function whose installed text (``pg_proc``) differs from its file.
"""

from labelapp.queue.label import canonical_choice, display_choice, label_submit
from labelapp.queue.label_input import (
    MAX_DURATION_MS,
    MAX_IDEMPOTENCY_KEY,
    RATIONALE_MAX_CHARS,
    STRENGTH_MAX,
    STRENGTH_MIN,
    label_input_problem,
    label_input_problems,
)
from labelapp.queue.leases import comparison_next_for
from labelapp.queue.reclaim import leases_reclaim
from labelapp.queue.skip import (
    SKIP_REASON_MAX_CHARS,
    assignment_skip,
    skip_reason_problem,
)
from labelapp.queue.undo import label_edit, label_undo

__all__ = [
    "MAX_DURATION_MS",
    "MAX_IDEMPOTENCY_KEY",
    "RATIONALE_MAX_CHARS",
    "SKIP_REASON_MAX_CHARS",
    "STRENGTH_MAX",
    "STRENGTH_MIN",
    "assignment_skip",
    "canonical_choice",
    "comparison_next_for",
    "display_choice",
    "label_edit",
    "label_input_problem",
    "label_input_problems",
    "label_submit",
    "label_undo",
    "leases_reclaim",
    "skip_reason_problem",
]
