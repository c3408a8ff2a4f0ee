"""Reward-model training throughput: ``training`` vs TRL's ``RewardTrainer``.

Both trainers get the same base model, the same token ids (pairs are tokenised once
with ``training.data.Formatter`` and handed to TRL pre-tokenised, so TRL's
drop-if-too-long filter removes nothing), the same learning rate, epochs, batch
size, warm-up, fp32 and no gradient checkpointing. Throughput is training pairs per
second of the training loop (model loading and tokenisation excluded for both).
Accuracy is measured on the same held-out HH pairs, scored the same way.

    python bench/rm_bench.py                       # both runs, default sizes
    python bench/rm_bench.py --only encoder --n-train 400
    python bench/rm_bench.py --only decoder --decoder builtin:smollm2-135m-instruct

Decoder runs default to a small randomly initialised Llama with SmolLM2's tokenizer
and chat template (SmolLM2-135M itself takes tens of minutes per run on 2 CPU
cores); the throughput effect of prefix reuse depends on sequence shapes, not
weights. Its accuracy is only a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from training.config import RewardConfig  # noqa: E402
from training.data import Formatter, read_pairs  # noqa: E402
from training.models import resolve_model_ref  # noqa: E402
from training.rm_data import encode_pairs  # noqa: E402
from training.rm_metrics import preference_metrics  # noqa: E402
from training.train_rm import train  # noqa: E402

HH = REPO / ".." / "shared" / "data" / "hh-harmless-dev.jsonl.gz"


def tiny_decoder_base(directory: Path, artifacts_dir: str | None) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    smol = resolve_model_ref("builtin:smollm2-135m-instruct", artifacts_dir)
    tok = AutoTokenizer.from_pretrained(str(smol))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id or tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory


def run_trl(
    base_dir: Path,
    train_enc: list,
    eval_enc: list,
    pad_id: int,
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = pad_id
    # HH pairs are all p_a = 1, so "chosen" = A for every pair.
    data = Dataset.from_list(
        [
            {"chosen_ids": e.prefix + e.a, "rejected_ids": e.prefix + e.b}
            for e in train_enc
        ]
    )
    cfg = TRLRewardConfig(
        output_dir=str(out),
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_length=args.max_length,
        # transformers 5 dropped warmup_ratio; same step count as training's.
        warmup_steps=int(
            args.warmup_ratio
            * args.epochs
            * ((len(train_enc) + args.batch_size - 1) // args.batch_size)
        ),
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        seed=args.seed,
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(
        model=model, args=cfg, train_dataset=data, processing_class=tok
    )
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    runtime = float(result.metrics.get("train_runtime", wall))
    seen = len(train_enc) * args.epochs
    model.eval()
    ra, rb = [], []
    with torch.no_grad():
        for e in eval_enc:
            for seq, bucket in ((e.prefix + e.a, ra), (e.prefix + e.b, rb)):
                ids = torch.tensor([seq])
                bucket.append(model(input_ids=ids).logits.squeeze().item())
    n = len(eval_enc)
    metrics = preference_metrics(
        torch.tensor(ra), torch.tensor(rb), torch.ones(n), torch.zeros(n)
    )
    return {
        "pairs_per_s": seen / runtime,
        "runtime_s": runtime,
        "accuracy": metrics["accuracy"],
        "log_loss": metrics["log_loss"],
    }


def run_ours(
    base_ref: str, pairs: list, eval_pairs: list, args: argparse.Namespace, **kw: Any
) -> dict[str, Any]:
    config = RewardConfig(
        base=base_ref,
        learning_rate=args.lr,
        num_epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=args.warmup_ratio,
        eval_fraction=0.0,
        seed=args.seed,
        bf16=False,
        gradient_checkpointing=False,
        **kw,
    )
    res = train(pairs, config, eval_pairs=eval_pairs, artifacts_dir=args.artifacts_dir)
    t, e = res.metrics["train"], res.metrics["extra_eval"]
    return {
        "pairs_per_s": t["pairs_per_s"],
        "runtime_s": t["runtime_s"],
        "accuracy": e["accuracy"],
        "log_loss": e["log_loss"],
        "truncation": t["truncation"],
    }


def bench_one(
    kind: str, base_ref: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    skipped: list = []
    all_pairs = read_pairs(HH, skipped=skipped)
    n_tr, n_ev = args.n_train, args.n_eval
    pairs, eval_pairs = all_pairs[:n_tr], all_pairs[-n_ev:]
    if kind == "decoder" and base_ref == "tiny":
        base_dir = tiny_decoder_base(tmp / "tiny-decoder", args.artifacts_dir)
        base_ref = str(base_dir)
    else:
        base_dir = resolve_model_ref(base_ref, args.artifacts_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    fmt = Formatter(tok, args.max_length, is_encoder=kind == "encoder")
    train_enc, eval_enc = encode_pairs(fmt, pairs), encode_pairs(fmt, eval_pairs)
    prefix_share = sum(2 * len(e.prefix) for e in train_enc) / sum(
        2 * len(e.prefix) + len(e.a) + len(e.b) for e in train_enc
    )
    print(
        f"[{kind}] {base_ref}: {len(pairs)} train / {len(eval_pairs)} eval pairs, "
        f"{len(skipped)} invalid HH lines skipped, prompt share of tokens "
        f"{prefix_share:.0%}",
        flush=True,
    )
    out: dict[str, Any] = {"base": base_ref, "prompt_token_share": prefix_share}
    # One-time costs (oneDNN kernel selection, allocator growth, lazy optimizer
    # state) would otherwise be charged to whichever trainer runs first.
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    run_ours(base_ref, pairs[: 2 * args.batch_size], eval_pairs[:2], warm)
    print(f"[{kind}] training with `training` ...", flush=True)
    out["ours"] = run_ours(base_ref, pairs, eval_pairs, args)
    print(f"[{kind}] ours: {json.dumps(out['ours'])}", flush=True)
    if args.ablate:
        out["ours_padded"] = run_ours(
            base_ref, pairs, eval_pairs, args, padding_free=False
        )
        print(f"[{kind}] ours, padded (no packing): {out['ours_padded']}")
    if kind == "decoder" and args.ablate:
        out["ours_no_prefix_reuse"] = run_ours(
            base_ref, pairs, eval_pairs, args, prefix_reuse=False
        )
        print(f"[{kind}] ours, no prefix reuse: {out['ours_no_prefix_reuse']}")
    print(f"[{kind}] training with TRL RewardTrainer ...", flush=True)
    pad_id = tok.pad_token_id
    out["trl"] = run_trl(base_dir, train_enc, eval_enc, pad_id, args, tmp / "trl")
    print(f"[{kind}] trl: {json.dumps(out['trl'])}", flush=True)
    out["speedup"] = out["ours"]["pairs_per_s"] / out["trl"]["pairs_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["encoder", "decoder"], default=None)
    p.add_argument("--encoder", default="builtin:minilm-l6")
    p.add_argument(
        "--decoder",
        default="tiny",
        help="'tiny' (random 4-layer Llama, SmolLM2 tokenizer) or a model ref",
    )
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--warmup-ratio", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also time `training` without packing, and decoders without reuse",
    )
    p.add_argument("--artifacts-dir", default=None)
    p.add_argument("--json", default=None, help="write results here")
    args = p.parse_args(argv)
    if not HH.is_file():
        print(f"missing {HH}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    results: dict[str, Any] = {
        "argv": sys.argv,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, cuda={torch.cuda.is_available()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        kinds = [args.only] if args.only else ["encoder", "decoder"]
        for kind in kinds:
            ref = args.encoder if kind == "encoder" else args.decoder
            results[kind] = bench_one(kind, ref, args, Path(tmp))
    print()
    print(f"machine: {results['machine']}")
    print(f"{'run':8} {'base':34} {'ours p/s':>9} {'TRL p/s':>9} {'ratio':>6} "
          f"{'acc ours':>8} {'acc TRL':>8}")  # fmt: skip
    for kind in ("encoder", "decoder"):
        if kind not in results:
            continue
        r = results[kind]
        base = Path(r["base"]).name if kind == "decoder" else r["base"]
        print(
            f"{kind:8} {base[:34]:34} {r['ours']['pairs_per_s']:9.2f} "
            f"{r['trl']['pairs_per_s']:9.2f} {r['speedup']:6.2f} "
            f"{r['ours']['accuracy']:8.3f} {r['trl']['accuracy']:8.3f}"
        )
        for key in ("ours_padded", "ours_no_prefix_reuse"):
            if key in r:
                ablation = r[key]["pairs_per_s"]
                print(
                    f"  ablation {key}: {ablation:.2f} pairs/s, "
                    f"{ablation / r['trl']['pairs_per_s']:.2f}x TRL"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
