"""llama.cpp as a best-of-N peer for ``bench/bon_bench.py`` (issue 19, item 4).

llama-cpp-python lives in its own virtualenv (``.venv-llama``, built by
``scripts/ensure-llama-server.sh``; it has no torch), so this file has two halves
that import only the standard library at the top:

- the worker, run by ``.venv-llama/bin/python bench/llamacpp_peer.py serve``: it
  loads one GGUF through llama.cpp's C API (``llama_cpp``'s ctypes bindings of
  ``llama.h``) and answers one JSON request per line on stdin with one JSON line on
  stdout. Per request every prompt is prefilled once (all prompts in one
  ``llama_decode``), its KV is copied to its N sequences (``llama_memory_seq_cp``),
  and all rows decode together, one ``llama_decode`` per step over every unfinished
  row, each row with its own sampler chain (temperature, top-p, ``dist`` with its
  own seed). A row stops at one of the request's end-of-sequence ids (counted) or
  at the token budget; finished rows leave the batch.
  ``... quantize SRC DST --ftype f32|q4_1`` writes another type of the same GGUF
  (``llama_model_quantize`` with ``allow_requantize``).
- the client, imported by bon_bench: ``LlamaCppPeer`` starts a worker and has the
  sampler's ``sample(conversations, n, ...)``, so bon_bench times it exactly as it
  times the engine (the engine's own tokenizer encodes the chat-templated prompts,
  and decodes the replies, inside the timed call).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LLAMA_VENV = REPO / ".venv-llama"
LLAMA_VERSION = "0.3.36"
GGUF_CACHE = REPO / "var" / "gguf"
KV_LAYOUTS = ("streams", "unified")
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}


# --------------------------------------------------------------------- worker


class _Worker:
    """One model and one context; ``run`` answers one request."""

    def __init__(
        self,
        model_path: str,
        *,
        threads: int,
        rows: int,
        n_ctx: int,
        n_batch: int,
        kv: str,
    ):
        import llama_cpp as ll

        self.ll = ll
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = ll.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {model_path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        desc = ctypes.create_string_buffer(128)
        ll.llama_model_desc(self.model, desc, len(desc))
        self.desc = desc.value.decode()
        self.rows, self.kv = rows, kv
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        # One batch holds every prompt's tokens at prefill and every row at decode.
        cparams.n_batch = cparams.n_ubatch = n_batch = max(n_batch, rows)
        cparams.n_seq_max = rows
        cparams.n_threads = cparams.n_threads_batch = threads
        # "unified": one KV buffer for all sequences; seq_cp adds the N sequence
        # ids to the prompt's cells (nothing is copied), as llama.cpp's batched
        # example shares a prompt, but every row's attention spans every cell.
        # "streams": a buffer per sequence (n_ctx / rows cells each); seq_cp copies
        # the prompt's KV into the N - 1 other streams and each row attends only
        # to its own cells.
        cparams.kv_unified = kv == "unified"
        cparams.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create a context")
        self.n_ctx = ll.llama_n_ctx(self.ctx)
        self.n_ctx_seq = ll.llama_n_ctx_seq(self.ctx)
        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        self.n_batch = n_batch

    def info(self) -> dict[str, Any]:
        ll = self.ll
        return {
            "ready": True,
            "desc": self.desc,
            "params": ll.llama_model_n_params(self.model),
            "bytes": ll.llama_model_size(self.model),
            "rows": self.rows,
            "kv": self.kv,
            "n_ctx": self.n_ctx,
            "n_ctx_seq": self.n_ctx_seq,
            "n_batch": self.n_batch,
            "system": ll.llama_print_system_info().decode(),
        }

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """(token, position, sequence, wants logits) per batch entry."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)

    def _decode(self) -> None:
        status = self.ll.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def _sampler(self, temperature: float, top_p: float, seed: int) -> Any:
        ll = self.ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        # Temperature before top-p, as transformers' warpers and the engine do.
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(temperature))
        if top_p < 1.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        return chain

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        ll = self.ll
        prompts: list[list[int]] = request["prompts"]
        n, budget = int(request["n"]), int(request["max_new_tokens"])
        eos = set(request["eos_ids"])
        rows = len(prompts) * n
        prefill = sum(map(len, prompts))
        if self.kv == "unified":
            fits = prefill + rows * budget <= self.n_ctx
        else:
            fits = max(map(len, prompts)) + budget <= self.n_ctx_seq
        if rows > self.rows or prefill > self.n_batch or not fits:
            raise ValueError(
                f"{len(prompts)} prompts x n={n} x {budget} tokens do not fit "
                f"rows={self.rows}, n_ctx={self.n_ctx} ({self.kv}), "
                f"n_batch={self.n_batch}"
            )
        start = time.perf_counter()
        ll.llama_memory_clear(ll.llama_get_memory(self.ctx), True)
        samplers = [
            self._sampler(
                float(request["temperature"]),
                float(request["top_p"]),
                (int(request["seed"]) * 1_000_003 + row) & 0xFFFFFFFF,
            )
            for row in range(rows)
        ]
        try:
            # Prefill: every prompt once, as sequence p * n; logits only at its end.
            entries, last = [], []
            for p, prompt in enumerate(prompts):
                entries += [
                    (tok, pos, p * n, pos == len(prompt) - 1)
                    for pos, tok in enumerate(prompt)
                ]
                last.append(len(entries) - 1)
            self._fill(entries)
            self._decode()
            prefill_calls, kv_copies = 1, 0
            memory = ll.llama_get_memory(self.ctx)
            for p in range(len(prompts)):
                for j in range(1, n):
                    ll.llama_memory_seq_cp(memory, p * n, p * n + j, -1, -1)
                    kv_copies += 1
            ids: list[list[int]] = [[] for _ in range(rows)]
            active = list(range(rows))
            # Where each row's logits are, as a position in the last batch: its
            # prompt's last token first, then its own entry.
            at = {row: last[row // n] for row in active}
            steps, widest = 0, 0
            while active:
                still = []
                for row in active:
                    token = ll.llama_sampler_sample(samplers[row], self.ctx, at[row])
                    ids[row].append(token)
                    if token not in eos and len(ids[row]) < budget:
                        still.append(row)
                active = still
                if not active:
                    break
                self._fill(
                    [
                        (ids[r][-1], len(prompts[r // n]) + len(ids[r]) - 1, r, True)
                        for r in active
                    ]
                )
                self._decode()
                steps += 1
                widest = max(widest, len(active))
                at = {row: k for k, row in enumerate(active)}
        finally:
            for chain in samplers:
                ll.llama_sampler_free(chain)
        seconds = time.perf_counter() - start
        tokens = sum(map(len, ids))
        return {
            "ids": ids,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds else 0.0,
            "samples": rows,
            "prompt_tokens": prefill,
            "prefill_tokens": prefill,
            "prefill_calls": prefill_calls,
            "kv_copies": kv_copies,
            "decode_steps": steps,
            "widest_decode": widest,
            "stopped": sum(1 for row in ids if row and row[-1] in eos),
        }


def serve(args: argparse.Namespace) -> int:
    worker = _Worker(
        args.model,
        threads=args.threads,
        rows=args.rows,
        n_ctx=args.n_ctx,
        n_batch=args.n_batch,
        kv=args.kv,
    )
    print(json.dumps(worker.info()), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = worker.run(json.loads(line))
        except Exception as exc:  # the client reports it; the worker keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


def quantize(args: argparse.Namespace) -> int:
    import llama_cpp as ll

    ll.llama_backend_init()
    params = ll.llama_model_quantize_default_params()
    params.nthread = args.threads
    params.ftype = FTYPES[args.ftype]
    # The builtin GGUF is already quantised (Q4_1): F32 needs this to dequantise.
    params.allow_requantize = True
    status = ll.llama_model_quantize(
        args.src.encode(), args.dst.encode(), ctypes.byref(params)
    )
    if status != 0:
        print(f"llama_model_quantize returned {status}", file=sys.stderr)
    return 1 if status else 0


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llama.cpp best-of-N worker")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="answer JSON requests on stdin")
    s.add_argument("--model", required=True)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--rows", type=int, default=64, help="most sequences per request")
    s.add_argument("--n-ctx", type=int, default=8192, help="KV cells, all rows")
    s.add_argument("--n-batch", type=int, default=512, help="most prefill tokens")
    s.add_argument("--kv", choices=KV_LAYOUTS, default="streams")
    q = sub.add_parser("quantize", help="write SRC as DST of another type")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--ftype", choices=sorted(FTYPES), default="f32")
    q.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    return serve(args) if args.command == "serve" else quantize(args)


# --------------------------------------------------------------------- client


def llama_python() -> Path | None:
    """``.venv-llama``'s python once the build finished, else None."""
    python = LLAMA_VENV / "bin" / "python"
    built = LLAMA_VENV / f".built-{LLAMA_VERSION}"
    return python if python.is_file() and built.is_file() else None


def gguf_variant(
    src: Path, ftype: str, *, cache: Path = GGUF_CACHE, python: Path | None = None
) -> Path:
    """``src`` as ``ftype``: ``src`` itself if its name says it is that type,
    else a copy quantised once into ``cache`` (``<stem without type>.<FTYPE>.gguf``)."""
    stem, _, kind = src.stem.rpartition(".")
    if kind.lower() == ftype:
        return src
    target = cache / f"{stem or src.stem}.{ftype.upper()}.gguf"
    if target.is_file():
        return target
    python = python or llama_python()
    if python is None:
        raise RuntimeError("llama-cpp-python is not built in .venv-llama")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".gguf", dir=cache)
    os.close(fd)
    try:
        cmd = [str(python), __file__, "quantize", str(src), tmp, "--ftype", ftype]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"quantize to {ftype} failed: {run.stderr[-2000:]}")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; other trees may read it
        os.replace(tmp, target)  # atomic: readers see no file or a whole one
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def context_size(
    kv: str, rows: int, prompt_lengths: list[int], max_new_tokens: int
) -> tuple[int, int]:
    """KV cells and batch size for ``rows`` sequences over these prompts: with one
    unified buffer every prompt once plus every row's tokens; with a stream per
    sequence, each stream the longest prompt plus the budget. The batch holds all
    prompts at once (prefill) and all rows (decode)."""

    def up(cells: int) -> int:
        return -(-cells // 256) * 256

    if kv == "unified":
        n_ctx = up(sum(prompt_lengths) + rows * max_new_tokens)
    else:
        n_ctx = rows * up(max(prompt_lengths) + max_new_tokens)
    return n_ctx, max(rows, sum(prompt_lengths))


@dataclass(frozen=True)
class PeerCompletion:
    """What bon_bench reads of a sample (the engine's ``Completion`` fields)."""

    text: str
    token_count: int
    finish_reason: str


class LlamaCppPeer:
    """A llama.cpp worker behind the engine's ``sample`` signature.

    ``encoder`` is the engine (its ``encode``, ``eos_ids`` and ``tokenizer``), so
    both sides sample from the same token ids and stop at the same ids."""

    name = "llama.cpp"

    def __init__(
        self,
        model: Path,
        encoder: Any,
        *,
        threads: int,
        rows: int,
        prompt_lengths: list[int],
        max_new_tokens: int,
        kv: str = "streams",
        python: Path | None = None,
    ):
        python = python or llama_python()
        if python is None:
            raise RuntimeError("llama-cpp-python is not built in .venv-llama")
        cmd = [str(python), __file__, "serve", "--model", str(model)]
        n_ctx, n_batch = context_size(kv, rows, prompt_lengths, max_new_tokens)
        cmd += ["--threads", str(threads), "--rows", str(rows), "--kv", kv]
        cmd += ["--n-ctx", str(n_ctx), "--n-batch", str(n_batch)]
        self._start(cmd, encoder)

    def _start(
        self, cmd: list[str], encoder: Any, env: dict[str, str] | None = None
    ) -> None:
        """Start the worker ``cmd``; its first line is its ``info``."""
        self.encoder = encoder
        fd, log = tempfile.mkstemp(prefix="peer-", suffix=".log")
        self.log = Path(log)  # the engine's own messages, shown if the worker dies
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=fd,
                text=True,
                bufsize=1,
                env=env,
            )
        finally:
            os.close(fd)  # the worker holds its own copy
        self.info = self._reply()
        self.last_stats: dict[str, Any] = {}

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"{self.name} worker exited: {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker: {reply['error']}")
        return reply

    def request(self, prompts: list[list[int]], n: int, **kw: Any) -> dict[str, Any]:
        """One best-of-N request on token ids; the worker's reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"prompts": prompts, "n": n, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def sample(
        self,
        conversations: list,
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[PeerCompletion]]:
        eos = list(self.encoder.eos_ids)
        reply = self.request(
            [self.encoder.encode(c) for c in conversations],
            n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            eos_ids=eos,
        )
        ids = reply.pop("ids")
        self.last_stats = reply
        decode = self.encoder.tokenizer.decode
        rows = []
        for p in range(len(conversations)):
            rows.append(
                [
                    PeerCompletion(
                        text=decode(row, skip_special_tokens=True),
                        token_count=len(row),
                        finish_reason="stop" if row and row[-1] in eos else "length",
                    )
                    for row in ids[p * n : (p + 1) * n]
                ]
            )
        return rows

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(worker_main())
