"""Issue 19: a round through the ``openai`` backend against a real llama.cpp server
(llama-cpp-python's OpenAI-compatible server, built by
scripts/ensure-llama-server.sh into .venv-llama, serving the builtin SmolLM2 GGUF).
The pairs it makes enter the queue; the round records the backend and the model; a
server that serves another model is refused before any sampling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labelapp.models import Comparison, Response, Round
from labelapp.queue import comparison_next_for
from tests.labelapp.conftest import make_user
from tests.labelapp.openai_servers import round_project, run_round, served
from training.models import smollm2_gguf_path

ROOT = Path(__file__).resolve().parents[2]
LLAMA_PY = ROOT / ".venv-llama" / "bin" / "python"
BUILT = list((ROOT / ".venv-llama").glob(".built-*"))
ALIAS = "smollm2-135m-instruct-gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BUILT,
        reason="llama-cpp-python[server] is not built in .venv-llama "
        "(make test runs scripts/ensure-llama-server.sh; see .venv-llama/build.log)",
    ),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> Iterator[str]:
    def command(port: int) -> list[str]:
        return [
            str(LLAMA_PY), "-m", "llama_cpp.server",
            "--model", str(smollm2_gguf_path()), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048", "--n_threads", "2",
        ]  # fmt: skip

    with served(command, tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


@pytest.mark.django_db
def test_a_round_against_a_real_llama_cpp_server_fills_the_queue(llama_server):
    models = httpx.get(f"{llama_server}/models", timeout=5).json()
    assert ALIAS in [m["id"] for m in models["data"]]
    project = round_project(llama_server, ALIAS)
    job = run_round(project)
    assert job.status == "succeeded", job.error
    rnd = Round.objects.get(project=project)
    assert (rnd.settings["sampler_backend"], rnd.settings["sampler_model"]) == (
        "openai",
        ALIAS,
    )
    samples = list(Response.objects.filter(round=rnd))
    assert samples and {s.model_ref for s in samples} == {ALIAS}
    # SmolLM2 writes words, not an echo of the prompt or an empty string.
    assert all(s.text.strip() for s in samples)
    assert any(len(s.text.split()) >= 3 for s in samples)
    pairs = Comparison.objects.filter(round=rnd)
    assert pairs.exists() and set(pairs.values_list("status", flat=True)) == {"open"}
    annotator = make_user(project=project)
    assignment = comparison_next_for(annotator=annotator, project=project)
    assert assignment is not None and assignment.comparison.round_id == rnd.pk


@pytest.mark.django_db
def test_a_server_serving_another_model_is_refused_before_sampling(llama_server):
    project = round_project(llama_server, "some-other-model")
    job = run_round(project)
    assert job.status == "failed"
    assert "does not serve model 'some-other-model'" in job.error
    assert ALIAS in job.error
    assert not Response.objects.filter(prompt__project=project).exists()
