"""docs/api.md is the spec: its shell blocks, run in order as one session against a
fresh `make run` (the real runner: embedded PostgreSQL and Redis, migrate, the demo,
web + worker + beat), all succeed, and do what the text says.

Two changes only: the base URL points at this run's port, and every `curl -s`
becomes `curl -s --fail-with-body`, so an HTTP error fails the script (the reader
sees it in the output instead)."""

from __future__ import annotations

import re
import shutil
import subprocess

import psycopg
import pytest

from tests.conftest import ROOT
from tests.docs_run import make_run_session

DOC = ROOT / "docs" / "api.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture
def make_run():
    """`make run`'s runner on free ports with its own var/; yields (url, env, pg)."""
    with make_run_session() as session:
        yield session


def test_the_doc_has_the_blocks_this_test_relies_on():
    blocks = shell_blocks(DOC.read_text())
    assert len(blocks) >= 8
    text = "\n".join(blocks)
    assert "python manage.py" not in text  # ./pairloop manage, which works as is
    # No fixed ids but the demo project's: ids come from earlier responses.
    assert not re.search(r"/(assignments|labels|comparisons|prompts)/\d", text)
    assert not re.search(r'"(prompt|response_a|response_b)": \d', text)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_api_doc_command_works_against_make_run(make_run):
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.skip("docs/api.md needs curl and jq")
    url, env, pg_port = make_run
    script = "\n".join(shell_blocks(DOC.read_text()))
    assert "http://127.0.0.1:8000" in script
    script = script.replace("http://127.0.0.1:8000", url)
    script = script.replace("curl -s ", "curl -s --fail-with-body ")
    script = "set -euo pipefail\n" + script + '\necho "RESULT $LABEL $COMPARISON"\n'
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    label_id, comparison_id = map(int, done.stdout.split("RESULT ")[-1].split())
    db = f"postgresql://postgres@127.0.0.1:{pg_port}/pairloop"
    with psycopg.connect(db) as conn:
        review = conn.execute(
            "SELECT review_state FROM labelapp_label WHERE id = %s", [label_id]
        ).fetchone()
        status, project = conn.execute(
            "SELECT status, project_id FROM labelapp_comparison WHERE id = %s",
            [comparison_id],
        ).fetchone()
    assert review == ("rejected",)
    assert status == "retired" and project == 1
