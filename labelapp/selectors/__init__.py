"""Reads, one module per page or entity: visibility (what each user may see),
assignments (the annotator's pair and progress), review, quality (+ quality_stats,
its pure statistics).

The visibility and assignment selectors are re-exported here because
``labelapp.selectors.<name>`` is how callers named them before the package existed
(the API views, the fast lane, exports_jobs); new code imports the module.
"""

from labelapp.selectors.assignments import assignment_payload, project_progress
from labelapp.selectors.visibility import (
    STAFF_ROLES,
    administers_any,
    assignments_for,
    can_administer,
    comparisons_for,
    is_staff,
    jobs_for,
    labels_for,
    memberships_of,
    model_versions_for,
    projects_administered_by,
    projects_for,
    prompts_for,
    responses_for,
    rounds_for,
)

__all__ = [
    "STAFF_ROLES",
    "administers_any",
    "assignment_payload",
    "assignments_for",
    "can_administer",
    "comparisons_for",
    "is_staff",
    "jobs_for",
    "labels_for",
    "memberships_of",
    "model_versions_for",
    "project_progress",
    "projects_administered_by",
    "projects_for",
    "prompts_for",
    "responses_for",
    "rounds_for",
]
