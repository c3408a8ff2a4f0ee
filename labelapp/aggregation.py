"""Compatibility module: the aggregates moved to ``labelapp.services.aggregates``
and label review to ``labelapp.services.reviews`` (issue 13's layout).

Kept only for importers in modules other helpers are moving at the same time
(labelapp/queue.py, exports.py, importing.py); the lead switches those imports at
merge and deletes this file. New code must not import it.
"""

from labelapp.services.aggregates import (
    STRENGTH_CHOICES,
    Aggregate,
    aggregate_labels,
    comparison_aggregate_refresh,
)
from labelapp.services.reviews import REVIEW_NOTE_MAX_CHARS, label_review

__all__ = [
    "REVIEW_NOTE_MAX_CHARS",
    "STRENGTH_CHOICES",
    "Aggregate",
    "aggregate_labels",
    "comparison_aggregate_refresh",
    "label_review",
]
