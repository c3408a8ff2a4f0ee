"""GPU check: sampling and reward-model training throughput on random weights.

One script for a lent GPU machine (no network, nothing carried but the tree): the
models are built from their configs with random weights, and a word-level tokenizer
over synthetic words stands in for the real one (throughput depends on shapes, not
weights). For each architecture (SmolLM2-135M's and a ~1.1B Llama's):

1. best-of-N sampling, N=8: ``model.generate(num_return_sequences=N)`` vs this
   project's engine (``training.sampling.TransformersSampler``), alternated and timed
   by ``bench/bon_bench.py``'s functions; tokens/s is the median of ``--repeats``;
2. reward-model training in bf16 autocast through ``training.train_rm.train`` (the
   project's model class, batching, prefix reuse and fused AdamW) on random pairs;
   pairs/s and tokens/s over the optimizer steps after the first few (warm-up);
3. the vLLM backend's tokens/s on the same prompts, if ``import vllm`` works
   (nothing is installed: the row says "vllm not importable" otherwise).

It prints one table and, with ``--json PATH``, writes every run (rewritten after
each stage, so a run cut short keeps what it measured). A stage starts only while
enough of the time budget (``--budget-s``, 8 minutes) is left for it (``NEEDS_S``);
the elapsed time is printed as it goes. ``--dry-run`` runs every stage on the CPU with a 2-layer model and a few
tokens in seconds (the test suite runs it, so the script cannot rot).

    python bench/gpu_check.py --json var/gpu_check.json     # on the GPU machine
    python bench/gpu_check.py --dry-run --json /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bon_bench import alternate, rates, run_engine, short, warm_up  # noqa: E402

# LlamaConfig fields of each architecture (random weights; no download).
ARCHS: dict[str, dict[str, Any]] = {
    # SmolLM2-135M(-Instruct)'s config.json: 134,515,008 parameters.
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    # Llama-3.2-1B's layer shapes with a 32,000-token vocabulary, untied:
    # 1,104,218,112 parameters.
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    },
    # --dry-run's stand-in for both.
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
}
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# The plain chat formats' role words (training.data and training.sampling).
ROLE_WORDS = ["user", "assistant", "User", "Assistant", ":"]
# A stage starts only with at least this much of the budget left (full sizes;
# guesses for an H100, where every stage but vLLM should take well under it). vLLM's
# start alone (compile, CUDA graphs) can take a minute or two.
NEEDS_S = {"sampling": 60.0, "rm": 60.0, "vllm": 150.0}


@dataclass(frozen=True)
class Sizes:
    """The shapes measured. Random weights rarely sample EOS (about 1/vocab per
    token), so every sample runs to ``max_new_tokens``: a fixed amount of work."""

    prompts: int = 64
    n: int = 8
    prompt_tokens: int = 128  # mean; each prompt's words are drawn in [½, 1½]×
    max_new_tokens: int = 128
    repeats: int = 3
    rm_batch: int = 16  # pairs per optimizer step
    rm_steps: int = 24
    rm_warmup_steps: int = 4  # not timed: kernel selection, optimizer state
    rm_prompt_tokens: int = 192
    rm_response_tokens: int = 64


DRY_SIZES = Sizes(
    prompts=2,
    prompt_tokens=8,
    max_new_tokens=4,
    repeats=1,
    rm_batch=2,
    rm_steps=3,
    rm_warmup_steps=1,
    rm_prompt_tokens=8,
    rm_response_tokens=4,
)


class Budget:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


@dataclass
class Row:
    model: str
    measure: str  # "generate", "engine", "vllm", "rm-train-bf16"
    status: str = "ok"  # or "vllm not importable", "skipped: ...", "error: ..."
    value: float | None = None
    unit: str = ""
    ratio: float | None = None  # vs generate on the same model and prompts
    detail: dict[str, Any] | None = None


# ------------------------------------------------------------------ models, data


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer over ``w0, w1, ...``: one word, one token."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    fixed = SPECIALS + ROLE_WORDS
    vocab = fixed + [f"w{i}" for i in range(vocab_size - len(fixed))]
    tk = Tokenizer(WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=1 << 20,
    )


def build_model(arch: str, tokenizer: Any, device: str, dtype: Any, seed: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        **ARCHS[arch],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    with torch.device(device):  # initialised where it runs: no 4 GB host copy
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def words(rng: random.Random, k: int, vocab_size: int) -> str:
    first = len(SPECIALS) + len(ROLE_WORDS)
    return " ".join(f"w{rng.randrange(vocab_size - first)}" for _ in range(k))


def synthetic_prompts(sizes: Sizes, vocab_size: int, seed: int) -> list:
    rng = random.Random(seed)
    lo, hi = max(1, sizes.prompt_tokens // 2), sizes.prompt_tokens * 3 // 2
    return [
        [{"role": "user", "content": words(rng, rng.randint(lo, hi), vocab_size)}]
        for _ in range(sizes.prompts)
    ]


def synthetic_pairs(sizes: Sizes, vocab_size: int, seed: int) -> list:
    from training.data import Pair

    rng = random.Random(seed)
    pairs = []
    for i in range(sizes.rm_batch * sizes.rm_steps):
        prompt = words(rng, sizes.rm_prompt_tokens, vocab_size)
        a, b = (words(rng, sizes.rm_response_tokens, vocab_size) for _ in "ab")
        conv = [{"role": "user", "content": prompt}]
        pairs.append(Pair(conv, a, b, p_a=float(rng.random() < 0.5), id=f"pair-{i}"))
    return pairs


# ------------------------------------------------------------------ measurements


def sampling_args(sizes: Sizes, seed: int) -> argparse.Namespace:
    """What bon_bench's run_generate / run_engine / alternate read."""
    n, new, repeats = sizes.n, sizes.max_new_tokens, sizes.repeats
    return argparse.Namespace(
        n=n, max_new_tokens=new, temperature=1.0, top_p=1.0, seed=seed, repeats=repeats
    )


def median_rate(runs: list[dict]) -> float:
    return statistics.median(r["tokens_per_s"] for r in runs)


def measure_sampling(
    arch: str, model: Any, tokenizer: Any, prompts: list, args: argparse.Namespace
) -> list[Row]:
    from training.sampling import TransformersSampler

    rows_in_batch = len(prompts) * args.n
    engine = TransformersSampler(model, tokenizer, max_batch_rows=rows_in_batch)
    warm_up(engine, prompts, args)
    runs = alternate(engine, {"engine": engine}, prompts, args)
    rate = {name: median_rate(r) for name, r in runs.items()}
    detail = {
        "prompts": len(prompts),
        "n": args.n,
        "new_tokens": args.max_new_tokens,
        "shared_prefix_attention": engine.shared_prefix_attention,
        "fused_decode": engine.fused_decode,
    }
    return [
        Row(
            arch,
            name,
            value=rate[name],
            unit="tokens/s",
            ratio=rate[name] / rate["generate"] if name == "engine" else None,
            detail={**detail, "runs": runs[name]},
        )
        for name in runs
    ]


def measure_rm_training(
    arch: str, base_dir: Path, sizes: Sizes, device: str, seed: int
) -> list[Row]:
    """``train()`` on random pairs, timed per micro-batch through its counter (each
    follows ``loss.item()``, which waits for the GPU); the first steps are not
    timed."""
    import torch

    from training.config import RewardConfig
    from training.data import Formatter
    from training.models import load_tokenizer
    from training.rm_data import encode_pairs
    from training.train_rm import train

    tokenizer = load_tokenizer(str(base_dir))
    pairs = synthetic_pairs(sizes, len(tokenizer), seed)
    max_length = sizes.rm_prompt_tokens + sizes.rm_response_tokens + 16
    encoded = encode_pairs(Formatter(tokenizer, max_length, False), pairs)
    # Tokens the model reads per pair with prefix reuse: the prompt once, both
    # replies (padding not counted).
    pair_tokens = statistics.mean(len(e.prefix) + len(e.a) + len(e.b) for e in encoded)
    config = RewardConfig(
        base=str(base_dir),
        learning_rate=1e-5,
        num_epochs=1.0,
        batch_size=sizes.rm_batch,
        max_length=max_length,
        warmup_ratio=0.0,
        eval_fraction=0.0,
        validations=0,
        device=device,
        bf16=True,
        seed=seed,
        progress_interval_s=3600.0,
    )
    marks: list[tuple[float, int]] = []

    def counter(phase: str, done: int, total: int) -> None:
        if phase == "train":
            marks.append((time.perf_counter(), done))

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(pairs, config, counter=counter)
    (t0, d0), (t1, d1) = marks[sizes.rm_warmup_steps - 1], marks[-1]
    pairs_per_s = (d1 - d0) / (t1 - t0)
    train_metrics = result.metrics["train"]
    detail = {
        "steps": len(marks),
        "timed_steps": len(marks) - sizes.rm_warmup_steps,
        "batch_pairs": sizes.rm_batch,
        "tokens_per_pair": pair_tokens,
        "tokens_per_s": pairs_per_s * pair_tokens,
        "pairs_per_s_with_warmup": train_metrics["pairs_per_s"],
        "prefix_reuse": train_metrics["prefix_reuse"],
        "padding_free": train_metrics["padding_free"],
        "first_loss": train_metrics["first_loss"],
        "final_loss": train_metrics["final_loss"],
    }
    if cuda:
        detail["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del result
    return [
        Row(arch, "rm-train-bf16", value=pairs_per_s, unit="pairs/s", detail=detail)
    ]


def vllm_import_error() -> str | None:
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # an incompatible build raises more than ImportError
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def measure_vllm(
    arch: str,
    model_dir: Path,
    prompts: list,
    args: argparse.Namespace,
    generate_rate: float | None,
) -> list[Row]:
    from training.sampling import VLLMSampler

    # Each engine keeps a share of the GPU: a first one's memory is not always
    # handed back in-process before the second starts.
    sampler = VLLMSampler(
        str(model_dir), gpu_memory_utilization=0.3, max_model_len=1024, seed=args.seed
    )
    run_engine(sampler, prompts[:1], short(args))
    runs = [rates(run_engine(sampler, prompts, args)) for _ in range(args.repeats)]
    del sampler
    rate = median_rate(runs)
    ratio = rate / generate_rate if generate_rate else None
    detail = {"runs": runs}
    return [Row(arch, "vllm", value=rate, unit="tokens/s", ratio=ratio, detail=detail)]


# ------------------------------------------------------------------ the report


class Report:
    def __init__(self, setup: dict[str, Any], path: Path | None, budget: Budget):
        self.setup, self.path, self.budget = setup, path, budget
        self.models: dict[str, Any] = {}
        self.rows: list[Row] = []

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)
        self.write()

    def find(self, arch: str, measure: str) -> Row | None:
        rows = (r for r in self.rows if r.model == arch and r.measure == measure)
        return next((r for r in rows if r.status == "ok"), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "models": self.models,
            "rows": [asdict(r) for r in self.rows],
            "elapsed_s": self.budget.elapsed(),
        }

    def write(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.as_dict(), indent=2))

    def table(self) -> str:
        lines = [f"{'model':14s}{'params':>9s}  {'measure':15s}{'result':>28s}  ratio"]
        models = list(dict.fromkeys(r.model for r in self.rows))
        order = ("generate", "engine", "vllm", "rm-train-bf16")
        for r in sorted(
            self.rows, key=lambda r: (models.index(r.model), order.index(r.measure))
        ):
            params = self.models.get(r.model, {}).get("params") or 0
            shown = f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e3:.1f}k"
            if r.status != "ok":
                result = r.status[:60]
            elif r.measure == "rm-train-bf16":
                tokens = (r.detail or {}).get("tokens_per_s", 0)
                result = f"{r.value:,.1f} pairs/s ({tokens:,.0f} tok/s)"
            else:
                result = f"{r.value:,.1f} {r.unit}"
            ratio = f"{r.ratio:.2f}x" if r.ratio else ""
            lines.append(
                f"{r.model:14s}{shown:>9s}  {r.measure:15s}{result:>28s}  {ratio}"
            )
        return "\n".join(lines)


def stage(
    report: Report,
    arch: str,
    measures: tuple[str, ...],
    run: Callable[[], list[Row]],
    needs_s: float = 0.0,
) -> None:
    """Add the rows of ``run()`` unless the budget is spent (or has less
    than ``needs_s`` left); a failure becomes an error row for each of ``measures``
    and the check goes on."""
    left = report.budget.left()
    if left < needs_s or left <= 0:
        status = f"skipped: time budget ({report.budget.elapsed():.0f} s spent)"
        report.add(*(Row(arch, m, status=status) for m in measures))
        return
    try:
        report.add(*run())
    except Exception as exc:
        traceback.print_exc()
        status = f"error: {type(exc).__name__}: {exc}"[:300]
        report.add(*(Row(arch, m, status=status) for m in measures))
    finally:
        import torch

        gc.collect()
        torch.cuda.empty_cache()  # a no-op where CUDA never started
        print(f"[{report.budget.elapsed():7.1f} s] {arch}: {', '.join(measures)}")


def sample_and_save(
    report: Report,
    arch: str,
    prompts: list,
    model_dir: Path,
    device: str,
    args: argparse.Namespace,
) -> list[Row]:
    """Build ``arch``, measure its sampling, and save it to ``model_dir`` (the
    reward model and vLLM start from there)."""
    import torch

    tokenizer = synthetic_tokenizer(ARCHS[arch]["vocab_size"])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = build_model(arch, tokenizer, device, dtype, args.seed)
    params = sum(p.numel() for p in model.parameters())
    report.models[arch] = {"params": params, "dtype": str(dtype), **ARCHS[arch]}
    print(f"{arch}: {params:,} parameters, {dtype} on {device}")
    try:
        return measure_sampling(arch, model, tokenizer, prompts, args)
    finally:
        model.save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))


def check_vllm(
    report: Report,
    arch: str,
    prompts: list,
    model_dir: Path,
    device: str,
    args: argparse.Namespace,
    missing: str | None,
    needs: dict[str, float],
) -> None:
    if missing is not None:
        status, detail = "vllm not importable", {"error": missing}
        report.add(Row(arch, "vllm", status=status, detail=detail))
    elif not device.startswith("cuda"):
        report.add(Row(arch, "vllm", status="skipped: needs CUDA"))
    elif not (model_dir / "config.json").is_file():
        report.add(Row(arch, "vllm", status="skipped: no model saved"))
    else:
        base = report.find(arch, "generate")
        rate = base.value if base else None
        run = partial(measure_vllm, arch, model_dir, prompts, args, rate)
        stage(report, arch, ("vllm",), run, needs_s=needs["vllm"])


def setup_info(args: argparse.Namespace, device: str, sizes: Sizes) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "dry_run": args.dry_run,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "budget_s": args.budget_s,
        "sizes": asdict(sizes),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU, a 2-layer model, a few tokens, 1 repeat: every stage in seconds",
    )
    parser.add_argument("--archs", help=f"comma-separated, of {', '.join(ARCHS)}")
    parser.add_argument("--repeats", type=int, help="sampling runs per backend")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    budget = Budget(args.budget_s, time.perf_counter)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading and saving bars would bury the log

    sizes = DRY_SIZES if args.dry_run else Sizes()
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = "cpu" if args.dry_run else device
    default_archs = "tiny" if args.dry_run else "smollm2-135m,llama-1b"
    archs = (args.archs or default_archs).split(",")
    if not args.dry_run and device == "cpu":
        print("warning: full sizes on the CPU take far longer than the budget")
    report = Report(setup_info(args, device, sizes), args.json, budget)
    print(json.dumps(report.setup))
    sample_args = sampling_args(sizes, args.seed)
    needs = dict.fromkeys(NEEDS_S, 0.0) if args.dry_run else NEEDS_S
    prompts = {
        a: synthetic_prompts(sizes, ARCHS[a]["vocab_size"], args.seed) for a in archs
    }

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for arch in archs:
            model_dir = Path(tmp) / arch
            run = partial(
                sample_and_save,
                report,
                arch,
                prompts[arch],
                model_dir,
                device,
                sample_args,
            )
            stage(report, arch, ("generate", "engine"), run, needs["sampling"])
            if not (model_dir / "config.json").is_file():
                report.add(Row(arch, "rm-train-bf16", status="skipped: no model"))
                continue
            run = partial(
                measure_rm_training, arch, model_dir, sizes, device, args.seed
            )
            stage(report, arch, ("rm-train-bf16",), run, needs["rm"])
        # vLLM last: its engines keep GPU memory that torch cannot hand back.
        missing = vllm_import_error()
        for arch in archs:
            model_dir = Path(tmp) / arch
            check_vllm(
                report,
                arch,
                prompts[arch],
                model_dir,
                device,
                sample_args,
                missing,
                needs,
            )

    report.write()
    print()
    print(report.table())
    elapsed = budget.elapsed()
    over = " -- OVER BUDGET" if elapsed > args.budget_s else ""
    print(f"elapsed {elapsed:.1f} s (budget {args.budget_s:.0f} s){over}")
    return 1 if any(r.status.startswith("error") for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
