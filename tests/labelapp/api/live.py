"""The production web process for end-to-end tests: docker-compose.yml's own web
entrypoint (collectstatic, then gunicorn) with DEBUG=0, against the pytest-django
test database, plus optionally a Celery worker (tests.e2e.processes).

DEBUG=0 means secure cookies and an HTTPS redirect. docker-compose runs behind a
TLS-terminating proxy that says so in X-Forwarded-Proto (TRUST_X_FORWARDED_PROTO=1,
its default); clients of this server send that header as such a proxy would."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import yaml

from tests.conftest import ROOT
from tests.e2e.processes import Processes, free_port, wait_until

SECRET_KEY = "e2e-production-secret-" + "k7Q9x_" * 8
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}


def compose_web() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]


def start_production_web(
    procs: Processes, tmp_path: Path, workers: int = 2, threads: int = 2
) -> str:
    """Start compose's web service as compose would, on a free local port; returns
    its URL once it answers."""
    web = compose_web()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = web["environment"]
    procs.env.update(
        {
            "DEBUG": str(environment["DEBUG"]),
            "SECRET_KEY": SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1",
            "TRUST_X_FORWARDED_PROTO": "1",
            # The browser's Origin is the proxy's client side, http here.
            "CSRF_TRUSTED_ORIGINS": url,
            "STATIC_ROOT": str(tmp_path / "staticfiles"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
    )
    assert procs.env["DEBUG"] == "0"
    command = list(web["command"])
    assert command[0] == "gunicorn"
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    command[command.index("--workers") + 1] = str(workers)
    command[command.index("--threads") + 1] = str(threads)
    command[0:1] = [sys.executable, "-m", "gunicorn"]
    # Compose's entrypoint, literally ($$ is compose's escape for $).
    entrypoint = [part.replace("$$", "$") for part in web["entrypoint"]]
    procs._start("web", [*entrypoint, *command])
    procs.url = url

    def up() -> bool:
        if procs.procs["web"].poll() is not None:
            raise AssertionError(f"web exited early:\n{procs.log('web')[-3000:]}")
        try:
            response = httpx.get(f"{url}/login/", headers=PROXY_HEADERS, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    wait_until(up, timeout=180, what="gunicorn (DEBUG=0)")
    return url
