"""Best-of-N sampling throughput: this engine vs ``model.generate``, in one run.

Same model object, prompts, N, temperature/top-p and max new tokens for both:

- baseline: ``model.generate(num_return_sequences=N, do_sample=True)`` on the
  left-padded batch of prompts (it prefills every prompt N times and keeps
  finished rows in the batch);
- engine: ``training.sampling.TransformersSampler`` (one prefill per prompt, the
  prompt's KV kept once per prompt, a fused decode step for Llama models on CPU,
  finished rows dropped); ``--ablate`` adds it without the fused step and with
  the prompt's KV copied N times;
- optionally ``--backends transformers,vllm`` adds the vLLM sampler (GPU).

Runs alternate (baseline, engine, baseline, ...) so that a machine shared with
other work slows both alike; the best of ``--repeats`` runs is reported. Tokens
are counted up to and including each sample's end-of-sequence token.

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
    return {"seconds": elapsed, "tokens": tokens, "samples": sum(map(len, result))}


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
    parser.add_argument("--backends", default="transformers", help="and/or vllm")
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
    runs = alternate(engine, samplers, prompts, args)

    if "vllm" in args.backends.split(","):
        vllm_sampler = make_sampler("vllm", args.policy)
        run_engine(vllm_sampler, prompts[:1], short(args))
        runs["vllm"] = [
            rates(run_engine(vllm_sampler, prompts, args)) for _ in range(args.repeats)
        ]

    best = {
        name: max(results, key=lambda r: r["tokens_per_s"])
        for name, results in runs.items()
    }
    base = best["generate"]
    report: dict[str, Any] = {"setup": setup, "best": best, "ratios": {}}
    print(f"{'':26s}{'tokens/s':>10s}{'samples/s':>11s}{'ratio':>8s}")
    for name, result in best.items():
        ratio = result["tokens_per_s"] / base["tokens_per_s"]
        report["ratios"][name] = ratio
        spread = statistics.pstdev([r["tokens_per_s"] for r in runs[name]])
        print(
            f"{name:26s}{result['tokens_per_s']:10.1f}{result['samples_per_s']:11.2f}"
            f"{ratio:7.2f}x   (spread over runs ±{spread:.1f} tokens/s)"
        )
    if args.json:
        args.json.write_text(json.dumps({**report, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
