"""Number formatting for the dashboards: missing values show as an em dash."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()
MISSING = "—"


@register.filter
def num(value: Any, digits: int = 2) -> str:
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        return f"{float(value):.{int(digits)}f}"
    except (TypeError, ValueError):
        return MISSING


@register.filter
def pct(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        return f"{float(value):.0%}"
    except (TypeError, ValueError):
        return MISSING
