"""`manage.py check` is clean and every model change has its migration committed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


def test_system_check_is_clean():
    out = io.StringIO()
    call_command("check", "--fail-level", "WARNING", stdout=out)
    assert "no issues" in out.getvalue()


@pytest.mark.django_db
def test_no_missing_migrations():
    out = io.StringIO()
    # --check exits non-zero when a model change lacks its migration.
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
