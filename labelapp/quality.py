"""Compatibility module: data quality moved to ``labelapp.selectors.quality`` (reads),
``labelapp.selectors.quality_stats`` (pure statistics) and
``labelapp.services.annotators`` (the one write) (issue 13's layout).

Kept only for importers in modules other helpers are moving at the same time
(labelapp/exports.py: ``project_agreement``; labelapp/plots.py:
``AgreementAccumulator``); the lead switches those imports at merge and deletes this
file. New code must not import it.
"""

from labelapp.selectors.quality import project_agreement
from labelapp.selectors.quality_stats import AgreementAccumulator

__all__ = ["AgreementAccumulator", "project_agreement"]
