"""bench/llamacpp_peer.py: the llama.cpp best-of-N peer of bench/bon_bench.py, run
at a tiny size (1 prompt, N = 2, 4 tokens) on the builtin SmolLM2 GGUF. The prompt
is prefilled once and its KV copied to the other row, both rows decode together,
and the client returns what bon_bench counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import llamacpp_peer  # noqa: E402
from training.models import smollm2_gguf_path  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        llamacpp_peer.llama_python() is None,
        reason=f"llama-cpp-python is not built in .venv-llama (no .built-"
        f"{llamacpp_peer.LLAMA_VERSION}; make test runs "
        "scripts/ensure-llama-server.sh, see .venv-llama/build.log)",
    ),
]

# Any token ids of the vocabulary do for throughput: a chat-template-like prefix.
PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 2, 198, 1, 4093]


def _serve(*requests: dict, kv: str = "streams") -> list[dict]:
    cmd = [str(llamacpp_peer.llama_python()), str(REPO / "bench/llamacpp_peer.py")]
    cmd += ["serve", "--model", str(smollm2_gguf_path()), "--threads", "2"]
    cmd += ["--rows", "2", "--n-ctx", "512", "--n-batch", "64", "--kv", kv]
    run = subprocess.run(
        cmd,
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("kv", llamacpp_peer.KV_LAYOUTS)
def test_the_worker_prefills_the_prompt_once_and_decodes_both_rows_together(kv):
    request = {
        "prompts": [PROMPT],
        "n": 2,
        "max_new_tokens": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "seed": 0,
        "eos_ids": [],  # no stop: both rows run to the budget
    }
    info, first, again, other_seed = _serve(
        request, request, {**request, "seed": 1}, kv=kv
    )
    assert info["ready"] and "Q4_1" in info["desc"], info
    assert info["kv"] == kv
    assert info["params"] > 100_000_000
    assert first["tokens"] == 2 * 4 and first["samples"] == 2
    assert [len(row) for row in first["ids"]] == [4, 4]
    assert first["seconds"] > 0 and first["tokens_per_s"] > 0
    # One prefill of the prompt's tokens, not N of them; the KV copied once.
    assert first["prefill_tokens"] == len(PROMPT) == first["prompt_tokens"]
    assert first["prefill_calls"] == 1 and first["kv_copies"] == 1
    # The first token comes from the prefill's logits, the other 3 from 3 steps
    # that each decode both rows.
    assert first["decode_steps"] == 3 and first["widest_decode"] == 2
    # Seeded per row: the same request samples the same tokens, another seed not.
    assert again["ids"] == first["ids"]
    assert other_seed["ids"] != first["ids"]


def test_a_row_stops_at_an_end_of_sequence_id_and_counts_it():
    request = {
        "prompts": [PROMPT],
        "n": 2,
        "max_new_tokens": 4,
        "temperature": 0.0,  # greedy: both rows take the same first token
        "top_p": 1.0,
        "seed": 0,
        "eos_ids": [],
    }
    _, free = _serve(request)
    row = free["ids"][0]
    assert free["ids"] == [row, row]
    until = row[: row.index(row[1]) + 1]  # up to the first time that token comes
    _, stopped = _serve({**request, "eos_ids": [row[1]]})
    assert stopped["ids"] == [until, until]
    assert stopped["tokens"] == 2 * len(until) and stopped["stopped"] == 2


class _Encoder:
    """What the client reads of the engine: encode, eos_ids, tokenizer.decode."""

    eos_ids = [2]
    tokenizer = SimpleNamespace(
        decode=lambda ids, skip_special_tokens: " ".join(map(str, ids))
    )

    def encode(self, conversation: list[dict[str, str]]) -> list[int]:
        return PROMPT


def test_the_client_has_the_samplers_signature_and_reports_the_worker():
    peer = llamacpp_peer.LlamaCppPeer(
        smollm2_gguf_path(),
        _Encoder(),
        threads=2,
        rows=2,
        prompt_lengths=[len(PROMPT)],
        max_new_tokens=4,
    )
    try:
        conv = [{"role": "user", "content": "hi"}]
        rows = peer.sample([conv], 2, max_new_tokens=4, temperature=1.0, seed=3)
    finally:
        peer.close()
    assert len(rows) == 1 and len(rows[0]) == 2
    for completion in rows[0]:
        assert 1 <= completion.token_count <= 4
        assert completion.finish_reason in ("stop", "length")
    assert peer.last_stats["tokens"] == sum(c.token_count for c in rows[0])
    assert peer.last_stats["prefill_tokens"] == len(PROMPT)
    assert not peer.log.exists()
