"""The queue's SQL: labelapp/queue/sql/*.sql is the source of truth, migrations
install frozen copies, the system check (labelapp.E101) reports drift, and
``manage.py queue_sql_migration`` writes the migration for an edit."""

from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

import labelapp.migrations as migrations_pkg
from labelapp.queue import checks, functions

pytestmark = pytest.mark.django_db

# A change inside the function body (what pg_proc.prosrc holds), not its header.
_EDIT = ("ORDER BY c.priority DESC, c.labels_count DESC", "ORDER BY c.priority DESC")


def _edited_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "sql"
    shutil.copytree(functions.SQL_DIR, folder)
    path = folder / "candidate.sql"
    text = path.read_text()
    assert _EDIT[0] in text
    path.write_text(text.replace(_EDIT[0], _EDIT[1]))
    return folder


def test_installed_functions_are_the_files():
    assert checks.queue_sql_drift(databases=["default"]) == []
    with connection.cursor() as cursor:
        assert functions.drift(cursor) == []


def test_an_edited_file_without_a_migration_is_an_error(tmp_path, monkeypatch):
    folder = _edited_copy(tmp_path)
    monkeypatch.setattr(checks, "SQL_DIR", folder)
    errors = checks.queue_sql_drift(databases=["default"])
    assert [e.id for e in errors] == ["labelapp.E101"]
    assert "labelapp_queue_candidate" in errors[0].msg
    assert str(folder / "candidate.sql") in errors[0].msg
    assert "queue_sql_migration" in errors[0].hint


def test_manage_py_check_reports_the_drift(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "SQL_DIR", _edited_copy(tmp_path))
    with pytest.raises(SystemCheckError, match=r"labelapp\.E101.*candidate"):
        call_command("check", "--database", "default", stdout=io.StringIO())
    # Without a database to look at (plain ``check``), it does not run.
    call_command("check", stdout=io.StringIO())


def test_a_function_that_is_not_installed_is_an_error(monkeypatch):
    with connection.cursor() as cursor:  # DDL is transactional: rolled back
        cursor.execute(
            "ALTER FUNCTION labelapp_queue_next(bigint, integer, timestamptz,"
            " bigint[], integer, double precision, boolean, integer)"
            " RENAME TO labelapp_queue_next_gone"
        )
    (error,) = checks.queue_sql_drift(databases=["default"])
    assert "labelapp_queue_next is not installed" in error.msg


def test_a_file_must_define_one_function(tmp_path):
    with pytest.raises(ValueError, match=r"broken\.sql: expected one CREATE"):
        functions.parse("broken.sql", "SELECT 1;")


def test_no_migration_is_written_when_the_files_are_installed(tmp_path):
    out = io.StringIO()
    call_command("queue_sql_migration", output_dir=tmp_path, stdout=out)
    assert "No changes" in out.getvalue()
    assert list(tmp_path.iterdir()) == []


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("generated_migration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_written_migration_installs_the_edit_and_reverts_it(tmp_path):
    folder = _edited_copy(tmp_path)
    out_dir = tmp_path / "migrations"
    out_dir.mkdir()
    call_command(
        "queue_sql_migration", sql_dir=folder, output_dir=out_dir, stdout=io.StringIO()
    )
    (written,) = out_dir.iterdir()
    leaf = max(p.stem for p in Path(migrations_pkg.__file__).parent.glob("[0-9]*.py"))
    assert written.name == f"{int(leaf[:4]) + 1:04d}_queue_sql.py"
    module = _load(written)
    assert module.Migration.dependencies == [("labelapp", leaf)]
    # Frozen copies: the files' text now, and as the previous migration had them.
    assert {f: (folder / f).read_text() for f in functions.FILES} == module.QUEUE_SQL
    assert {
        f: (functions.SQL_DIR / f).read_text() for f in functions.FILES
    } == module.PREVIOUS
    with connection.cursor() as cursor:
        for op in module.Migration.operations:
            cursor.execute(op.sql)
        assert functions.drift(cursor, folder) == []
        assert [f.name for f, _ in functions.drift(cursor)] == [
            "labelapp_queue_candidate"
        ]
        for op in module.Migration.operations:
            cursor.execute(op.reverse_sql)
        assert functions.drift(cursor) == []
