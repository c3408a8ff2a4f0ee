"""Writes, one module per entity: content (projects, prompts, responses,
comparisons), aggregates, reviews, gold, annotators.

The content services are re-exported here because ``labelapp.services.<name>`` is
how callers named them before the package existed; new code imports the module
(``from labelapp.services.content import comparison_create``).
"""

from labelapp.services.content import (
    comparison_create,
    project_create,
    prompt_create,
    response_create,
)

__all__ = ["comparison_create", "project_create", "prompt_create", "response_create"]
