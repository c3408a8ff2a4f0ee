"""Real OpenAI-compatible servers (llama.cpp's, vLLM's) for the ``openai`` sampler
backend's end-to-end tests: start one as a subprocess, wait for ``/v1/models``, stop
it; a project whose rounds sample from it; a round run as the worker runs it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from labelapp import jobs
from labelapp.loop import rounds
from labelapp.models import Job
from labelapp.services.content import prompt_create
from tests.labelapp.conftest import make_project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(
    command: Callable[[int], list[str]],
    log: Path,
    *,
    startup_s: float = 120,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``command(port)`` until the block ends; yields the server's /v1 URL."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            command(port), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def round_project(url: str, model: str, **config):
    """A project whose rounds sample 3 answers to 2 prompts from the server."""
    project = make_project(
        overlap=1,
        n_samples=3,
        max_new_tokens=24,
        sampler_backend="openai",
        sampler_config={
            "base_url": url,
            "model": model,
            "mode": "chat",
            "timeout_s": 120,
            "max_concurrency": 1,
            **config,
        },
    )
    for q in ("What is the capital of France?", "Name a colour of the sky."):
        prompt_create(project=project, messages=[{"role": "user", "content": q}])
    return project


def run_round(project) -> Job:
    """A round job run as the worker runs it; its status and error tell the rest."""
    job = Job.objects.create(project=project, kind="round")
    with contextlib.suppress(Exception):
        jobs.job_run(job_id=job.pk, worker="t", service=rounds.round_run)
    job.refresh_from_db()
    return job
