"""Schemathesis against the live schema (issue 14's guard): a real gunicorn
(docker-compose's web process, DEBUG=0), PostgreSQL and a Celery worker, fuzzed
with an admin's token and with an annotator's. Bounded so it fits in `make test`:
a fixed seed and a few examples per operation. Zero server errors and zero status
codes the schema does not document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from labelapp.models import Membership
from tests.e2e.processes import Processes
from tests.frontend.conftest import make_comparison
from tests.labelapp.api.live import PROXY_HEADERS, start_production_web
from tests.labelapp.conftest import make_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("PAIRLOOP_SCHEMATHESIS_EXAMPLES", "12"))
SEED = 14


@pytest.fixture
def live(transactional_db, tmp_path, settings, django_user_model):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    procs = Processes(tmp_path)
    # Jobs the fuzzer starts must end quickly: no model this project could load.
    project = make_project(
        overlap=2, policy_ref="hf:/nonexistent/policy", reward_base_ref="hf:/none"
    )
    for i in range(6):
        make_comparison(
            project,
            [{"role": "user", "content": f"Fuzz question {i}?"}],
            f"Answer one {i}",
            f"Answer two {i}",
            random_key=i / 10,
        )
    admin = django_user_model.objects.create_user("fuzz-admin", is_staff=True)
    annotator = django_user_model.objects.create_user("fuzz-annotator")
    Membership.objects.create(project=project, user=annotator)
    tokens = {
        "admin": Token.objects.create(user=admin).key,
        "annotator": Token.objects.create(user=annotator).key,
    }
    try:
        url = start_production_web(procs, tmp_path)
        procs.start_worker()
        yield url, tokens, procs
    finally:
        procs.stop_all()


def _run(
    url: str, token: str, report: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    headers = {**PROXY_HEADERS, "Authorization": f"Token {token}"}
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/api/schema/?format=json",
        "--url",
        url,
        "--checks",
        "not_a_server_error,status_code_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--no-shrink",
        # One worker: hypothesis' lambda descriptions call ast.parse, which is not
        # thread-safe on CPython 3.11 (SystemError "AST constructor recursion
        # depth mismatch" with several workers).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--max-failures",
        "200",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    # Run in the test's folder: schemathesis keeps a cache in its working directory.
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
        cwd=report.parent,
    )


@pytest.mark.parametrize("who", ["admin", "annotator"])
def test_no_server_errors_and_no_undocumented_codes(live, who, tmp_path):
    url, tokens, procs = live
    result = _run(url, tokens[who], tmp_path / f"{who}.xml", procs.env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"schemathesis ({who}) found problems:\n{out[-12000:]}\n"
        f"--- web log ---\n{procs.log('web')[-4000:]}"
    )
    # Every phase ran (a schemathesis runtime error also exits 0 in some versions).
    summary = out[out.rfind("SUMMARY") :]
    assert "Runtime Error" not in summary and "🚫" not in summary, summary
    assert "generated" in summary, summary
    print(f"\nschemathesis ({who}):\n{summary}")
