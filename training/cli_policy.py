"""``python -m training train-policy``: the command line of
:mod:`training.train_policy` (flags from PolicyConfig's help, ``--config FILE``
for a saved version's settings, exit 2 with a named problem on bad input)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from training.config import POLICY_MODES, PolicyConfig, dataclass_help
from training.policy_data import EXIT_USAGE
from training.train_policy import __doc__ as TRAIN_POLICY_DOC
from training.train_policy import check_out_dir, prepare, train_policy


def register(subparsers: Any) -> None:
    d, h = PolicyConfig(), dataclass_help(PolicyConfig)
    p = subparsers.add_parser(
        "train-policy",
        help="fine-tune the policy on best-of-N examples (SFT) and/or pairs (DPO)",
        description=TRAIN_POLICY_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        nargs="*",
        default=[],
        metavar="FILE",
        help="training data: SFT examples for sft, pairs for dpo",
    )
    p.add_argument("--sft-data", nargs="*", default=[], metavar="FILE")
    p.add_argument("--dpo-data", nargs="*", default=[], metavar="FILE")
    p.add_argument("--base", default=d.base, help=h["base"])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--mode", default=d.mode, choices=POLICY_MODES, help=h["mode"])
    p.add_argument(
        "--restart-from",
        default=d.restart_from,
        choices=["base", "latest"],
        help=h["restart_from"],
    )
    p.add_argument("--latest", default=None, metavar="DIR", help=h["latest"])
    p.add_argument("--sft-lr", type=float, default=d.sft_learning_rate)
    p.add_argument("--sft-epochs", type=float, default=d.sft_epochs)
    p.add_argument("--dpo-lr", type=float, default=d.dpo_learning_rate)
    p.add_argument("--dpo-epochs", type=float, default=d.dpo_epochs)
    p.add_argument("--beta", type=float, default=d.beta, help=h["beta"])
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum", type=int, default=d.gradient_accumulation_steps)
    p.add_argument("--max-length", type=int, default=d.max_length, help=h["max_length"])
    p.add_argument("--seed", type=int, default=d.seed)
    lora = p.add_mutually_exclusive_group()
    lora.add_argument("--lora", dest="lora", action="store_true", default=None)
    lora.add_argument("--no-lora", dest="lora", action="store_false")
    p.add_argument("--device", default=None)
    p.add_argument("--artifacts-dir", default=None, help="default $ARTIFACTS_DIR")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="every setting from this JSON file (a version's training_config.json, "
        "PolicyConfig fields); the setting flags may not be given with it",
    )
    p.set_defaults(func=main)


SETTING_FLAGS = {
    "mode": "--mode", "base": "--base", "restart_from": "--restart-from",
    "latest": "--latest", "sft_lr": "--sft-lr", "sft_epochs": "--sft-epochs",
    "dpo_lr": "--dpo-lr", "dpo_epochs": "--dpo-epochs", "beta": "--beta",
    "batch_size": "--batch-size", "grad_accum": "--grad-accum",
    "max_length": "--max-length", "seed": "--seed", "lora": "--lora/--no-lora",
    "device": "--device",
}  # fmt: skip


def config_from_file(path: str, args: argparse.Namespace) -> PolicyConfig:
    """``--config FILE``: the settings as saved; refuses setting flags beside it
    (one of them would silently lose to the file or win over it)."""
    fresh = argparse.ArgumentParser()
    register(fresh.add_subparsers())
    defaults = vars(fresh.parse_args(["train-policy", "--out", "x"]))
    given = [
        flag for key, flag in SETTING_FLAGS.items() if vars(args)[key] != defaults[key]
    ]
    if given:
        raise ValueError(
            f"--config {path} takes every setting; drop {', '.join(given)}"
        )
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: not a JSON object")
    known = {f.name for f in dataclasses.fields(PolicyConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {unknown}")
    try:
        return PolicyConfig(**data)
    except TypeError as exc:
        raise ValueError(f"--config {path}: {exc}") from None


def config_from_args(args: argparse.Namespace) -> PolicyConfig:
    return PolicyConfig(
        mode=args.mode,
        base=args.base,
        restart_from=args.restart_from,
        latest=args.latest,
        sft_learning_rate=args.sft_lr,
        sft_epochs=args.sft_epochs,
        dpo_learning_rate=args.dpo_lr,
        dpo_epochs=args.dpo_epochs,
        beta=args.beta,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_length=args.max_length,
        seed=args.seed,
        lora=args.lora,
        device=args.device,
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.config:
            config = config_from_file(args.config, args)
        else:
            config = config_from_args(args)
        check_out_dir(args.out)
        sft_files = list(args.sft_data) or (
            list(args.data) if config.mode == "sft" else []
        )
        dpo_files = list(args.dpo_data) or (
            list(args.data) if config.mode == "dpo" else []
        )
        prepared = prepare(config, sft_files, dpo_files, args.artifacts_dir)
    except (ValueError, FileExistsError) as exc:  # PolicyDataError, ModelRefError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # torch.distributed: imported here, not at the top, so that `--help` stays fast.
    from training import distributed

    try:
        result = train_policy(prepared, args.out)
    except ValueError as exc:  # a batch that does not split over the ranks
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        world = distributed.current()
        distributed.shutdown()
    if not world.is_main:
        return 0
    m = result.metrics
    for phase in ("sft", "dpo"):
        if phase in m:
            r = m[phase]
            print(
                f"{phase}: {r['steps']} steps, loss {r['first_loss']} → "
                f"{r['final_loss']}, {r['tokens_per_s'] or 0:.0f} tokens/s"
            )
    print(f"saved {result.out_dir}")
    if world.size > 1:
        print(f"data parallel: {m['distributed']}")
    return 0
