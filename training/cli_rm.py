"""``python -m training train-rm`` and ``eval-rm``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from training.config import RewardConfig, config_help

EXIT_USAGE = 2


def _help(name: str) -> str:
    return config_help()[name]


def register(subparsers: Any) -> None:
    defaults = RewardConfig()
    p = subparsers.add_parser(
        "train-rm",
        help="train a reward model on preference pairs",
        description="Train a reward model; writes a version directory to --out.",
    )
    p.add_argument("--pairs", nargs="+", required=True, metavar="FILE")
    p.add_argument("--eval-pairs", nargs="*", default=[], metavar="FILE")
    p.add_argument("--base", default=defaults.base, help=_help("base"))
    p.add_argument("--init-from", default=None, metavar="DIR", help=_help("init_from"))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=float, default=defaults.num_epochs)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument(
        "--grad-accum", type=int, default=defaults.gradient_accumulation_steps
    )
    p.add_argument("--max-length", type=int, default=defaults.max_length)
    p.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--eval-fraction", type=float, default=defaults.eval_fraction)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--use-margins", action="store_true", help=_help("use_margins"))
    p.add_argument(
        "--margins",
        default=",".join(f"{m:.4g}" for m in defaults.margins),
        help=_help("margins") + " Comma-separated.",
    )
    p.add_argument(
        "--center-coef",
        type=float,
        default=defaults.center_rewards_coefficient,
        help=_help("center_rewards_coefficient"),
    )
    p.add_argument("--pooling", default=defaults.pooling, choices=["mean", "cls"])
    p.add_argument("--no-prefix-reuse", action="store_true", help=_help("prefix_reuse"))
    p.add_argument("--device", default=None)
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out bad lines (reported with their count) instead of failing",
    )
    p.add_argument("--artifacts-dir", default=None, help="default $ARTIFACTS_DIR")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "eval-rm",
        help="evaluate a reward model on pairs (JSON on stdout)",
    )
    e.add_argument("--model", required=True, metavar="DIR")
    e.add_argument("--pairs", nargs="+", required=True, metavar="FILE")
    e.add_argument("--max-length", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--device", default=None)
    e.add_argument("--skip-invalid", action="store_true")
    e.set_defaults(func=cmd_eval)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [("split", "pairs", "accuracy", "log_loss", "ece", "reward_mean±std")]
    for split in ("eval", "extra_eval"):
        m = metrics.get(split)
        if not m:
            continue
        rows.append(
            (
                split,
                str(m["n"]),
                _fmt(m["accuracy"]),
                _fmt(m["log_loss"]),
                _fmt(m["ece"]),
                f"{_fmt(m['reward_mean'])}±{_fmt(m['reward_std'])}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    t = metrics["train"]
    lines.append(
        f"train: {t['pairs']} pairs, {t['steps']} steps, loss {_fmt(t['first_loss'])}"
        f" → {_fmt(t['final_loss'])}, {_fmt(t['pairs_per_s'])} pairs/s, "
        f"truncated prompts {t['truncation']['prompt_truncated']}, "
        f"responses {t['truncation']['response_truncated']} "
        f"of {t['truncation']['sequences']} sequences"
    )
    return "\n".join(lines)


def _report_skipped(skipped: list[Any] | None) -> None:
    if skipped:
        print(f"skipped {len(skipped)} invalid lines, e.g.:", file=sys.stderr)
        for err in skipped[:5]:
            print(f"  {err}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.data import PairFormatError, read_pairs
    from training.models import ModelRefError, resolve_model_ref
    from training.reward_model import read_meta
    from training.train_rm import check_out_dir, train

    # Everything that can be wrong with the inputs is checked before any training.
    try:
        margins = tuple(float(x) for x in args.margins.split(","))
        config = RewardConfig(
            base=args.base,
            init_from=args.init_from,
            learning_rate=args.lr,
            num_epochs=args.epochs,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            max_length=args.max_length,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
            use_margins=args.use_margins,
            margins=margins,
            center_rewards_coefficient=args.center_coef,
            pooling=args.pooling,
            prefix_reuse=not args.no_prefix_reuse,
            device=args.device,
        )
        check_out_dir(args.out)
        if args.init_from:
            read_meta(args.init_from)
        else:
            resolve_model_ref(args.base, args.artifacts_dir)
        skipped: list[PairFormatError] | None = [] if args.skip_invalid else None
        pairs = read_pairs(args.pairs, limit=args.limit, skipped=skipped)
        eval_pairs = (
            read_pairs(args.eval_pairs, skipped=skipped) if args.eval_pairs else None
        )
    except (ValueError, ModelRefError, FileNotFoundError, FileExistsError) as exc:
        return _fail(str(exc))
    if not pairs:
        return _fail("no pairs in " + ", ".join(args.pairs))
    _report_skipped(skipped)

    bar = tqdm(total=1000, unit="‰", desc="train-rm", dynamic_ncols=True)

    def progress(fraction: float, message: str) -> None:
        bar.update(int(fraction * 1000) - bar.n)
        bar.set_postfix_str(message, refresh=True)

    result = train(
        pairs,
        config,
        progress=progress,
        eval_pairs=eval_pairs,
        out_dir=args.out,
        artifacts_dir=args.artifacts_dir,
    )
    bar.close()
    print(metrics_table(result.metrics))
    print(f"saved {result.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from training.data import read_pairs
    from training.reward_model import load_reward_model, read_meta
    from training.train_rm import evaluate_pairs

    try:
        meta = read_meta(args.model)
        model, tokenizer = load_reward_model(args.model, device=args.device)
        skipped: list[Any] | None = [] if args.skip_invalid else None
        pairs = read_pairs(args.pairs, limit=args.limit, skipped=skipped)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    _report_skipped(skipped)
    max_length = args.max_length or int(meta.get("config", {}).get("max_length", 512))
    metrics = evaluate_pairs(
        model,
        tokenizer,
        pairs,
        max_length=max_length,
        batch_size=args.batch_size,
        device=args.device,
    )
    metrics["skipped_invalid"] = len(skipped or [])
    print(json.dumps({"model": str(args.model), "pairs": args.pairs, **metrics}))
    return 0
