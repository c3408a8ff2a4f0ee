"""``python -m training train-rm`` and ``eval-rm``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from training.config import RewardConfig, config_field

EXIT_USAGE = 2

# CLI flag (argparse dest) -> RewardConfig field: the one list the parser and
# cmd_train both read, so a flag's default and help are the config's own.
CONFIG_FLAGS = {
    "base": "base",
    "init_from": "init_from",
    "epochs": "num_epochs",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "eval_fraction": "eval_fraction",
    "seed": "seed",
    "center_coef": "center_rewards_coefficient",
    "pooling": "pooling",
}
SKIP_HINT = (
    "(--skip-invalid leaves out bad lines instead, and reports how many were left out)"
)


class _HelpFormatter(argparse.HelpFormatter):
    """Help with each option's default, where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.required
            # By identity: 0 and 0.0 equal False but are real defaults.
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or action.default == []
        ):
            return text
        return text + " (default: %(default)s)"


def _help(name: str) -> str:
    return config_field(name)[1]


def _add_config_flag(parser: argparse.ArgumentParser, dest: str, **kw: Any) -> None:
    """``--flag`` for a RewardConfig field: its type, default and help text."""
    default, help_text = config_field(CONFIG_FLAGS[dest])
    if default is not None and "type" not in kw:
        kw["type"] = type(default)
    parser.add_argument(
        "--" + dest.replace("_", "-"),
        dest=dest,
        default=default,
        help=help_text.replace("%", "%%"),
        **kw,
    )


def register(subparsers: Any) -> None:
    defaults = RewardConfig()
    p = subparsers.add_parser(
        "train-rm",
        help="train a reward model on preference pairs",
        description="Train a reward model; writes a version directory to --out. "
        "Pair files: .jsonl, .jsonl.gz or .parquet (Pairloop's preference export, "
        "TRL, Anthropic HH or Pairloop pairs; see training/formats.py).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--pairs", nargs="+", required=True, metavar="FILE", help="training pairs"
    )
    p.add_argument(
        "--eval",
        nargs="+",
        default=None,
        metavar="FILE",
        dest="validation",
        help="validation pairs (periodic validation, best-checkpoint selection, "
        "reported as eval); every --pairs pair then trains and --eval-fraction "
        "is not used",
    )
    p.add_argument(
        "--eval-pairs",
        nargs="*",
        default=[],
        metavar="FILE",
        help="extra evaluation pairs, reported as extra_eval",
    )
    _add_config_flag(p, "base")
    _add_config_flag(p, "init_from", metavar="DIR", type=str)
    p.add_argument("--out", required=True, metavar="DIR", help="new version directory")
    for dest in (
        "epochs",
        "lr",
        "batch_size",
        "grad_accum",
        "max_length",
        "warmup_ratio",
        "weight_decay",
        "eval_fraction",
        "seed",
    ):
        _add_config_flag(p, dest)
    p.add_argument("--use-margins", action="store_true", help=_help("use_margins"))
    p.add_argument(
        "--length-control",
        action=argparse.BooleanOptionalAction,
        default=defaults.length_control,
        help=_help("length_control"),
    )
    p.add_argument(
        "--ensemble-heads",
        type=int,
        default=defaults.ensemble_heads,
        help=_help("ensemble_heads"),
    )
    p.add_argument(
        "--validations", type=int, default=defaults.validations,
        help=_help("validations"),
    )  # fmt: skip
    p.add_argument(
        "--margins",
        default=",".join(f"{m:.4g}" for m in defaults.margins),
        help=_help("margins") + " Comma-separated.",
    )
    _add_config_flag(p, "center_coef")
    _add_config_flag(p, "pooling", choices=["mean", "cls"])
    p.add_argument(
        "--no-prefix-reuse",
        action="store_true",
        help="turn off prefix reuse: " + _help("prefix_reuse"),
    )
    p.add_argument("--device", default=None, help=_help("device"))
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out bad lines (reported with their count) instead of failing",
    )
    p.add_argument("--artifacts-dir", default=None, help="default $ARTIFACTS_DIR")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="every setting from this JSON file (RewardConfig fields, as a "
        "version's pairloop.json 'config' holds them); the setting flags may not "
        "be given with it",
    )
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "eval-rm",
        help="evaluate a reward model on pairs (JSON on stdout)",
        description="Evaluate a reward-model version on pair files (.jsonl, "
        ".jsonl.gz or .parquet); metrics as one JSON object on stdout.",
        formatter_class=_HelpFormatter,
    )
    e.add_argument("--model", required=True, metavar="DIR", help="version directory")
    e.add_argument(
        "--pairs", nargs="+", required=True, metavar="FILE", help="pair files"
    )
    e.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="default: the max_length the model was trained with",
    )
    e.add_argument("--batch-size", type=int, default=32, help=_help("eval_batch_size"))
    e.add_argument(
        "--limit", type=int, default=None, help="use N pairs (after --offset)"
    )
    e.add_argument(
        "--offset",
        type=int,
        default=0,
        metavar="N",
        help="leave out the first N pairs, e.g. those a `train-rm --limit N` run "
        "trained on, so the rest evaluates the model on pairs it never saw",
    )
    e.add_argument("--device", default=None, help=_help("device"))
    e.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out bad lines (reported with their count) instead of failing",
    )
    e.add_argument(
        "--predictions",
        default=None,
        metavar="FILE",
        help="write one JSON line per pair: id, r_a, r_b, predicted P(A>B), the "
        "label p_a, strength, reply lengths (characters), correct",
    )
    e.set_defaults(func=cmd_eval)


def _read_error(exc: Exception, skip_invalid: bool) -> str:
    """The refusal of a pair file, with the way around it where there is one."""
    from training.formats import PairFormatError

    message = str(exc)
    if isinstance(exc, PairFormatError) and exc.line > 0 and not skip_invalid:
        message += "\n" + SKIP_HINT
    return message


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
    if metrics.get("validation"):
        passes = ", ".join(
            f"step {v['step']}: {_fmt(v['log_loss'])}" for v in metrics["validation"]
        )
        lines.append(f"validation log loss {passes}; kept step {metrics['best_step']}")
    return "\n".join(lines)


def _report_skipped(skipped: list[Any] | None) -> None:
    if skipped:
        print(f"skipped {len(skipped)} invalid lines, e.g.:", file=sys.stderr)
        for err in skipped[:5]:
            print(f"  {err}", file=sys.stderr)


class _PairBars:
    """One progress bar per phase (train, eval, extra_eval), counting pairs; the
    trainer's messages go in the current bar's postfix (or a line before the
    first bar: loading, tokenising)."""

    def __init__(self, tqdm: Any, desc: str) -> None:
        self.tqdm, self.desc = tqdm, desc
        self.bar: Any = None
        self.phase = ""
        self.said = ""

    def count(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = self.tqdm(
                total=total,
                unit="pair",
                desc=f"{self.desc} {phase}",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        self.bar.update(done - self.bar.n)

    def message(self, fraction: float, message: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(message, refresh=False)
        elif message != self.said:
            print(f"{self.desc}: {message}", file=sys.stderr, flush=True)
        self.said = message

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# Flags that set a RewardConfig field (refused beside --config).
SETTING_DESTS = (
    *CONFIG_FLAGS, "use_margins", "length_control", "ensemble_heads", "validations",
    "margins", "no_prefix_reuse", "device",
)  # fmt: skip


def _config_flags(args: argparse.Namespace) -> RewardConfig:
    margins = tuple(float(x) for x in args.margins.split(","))
    return RewardConfig(
        **{name: getattr(args, dest) for dest, name in CONFIG_FLAGS.items()},
        use_margins=args.use_margins,
        length_control=args.length_control,
        ensemble_heads=args.ensemble_heads,
        validations=args.validations,
        margins=margins,
        prefix_reuse=not args.no_prefix_reuse,
        device=args.device,
    )


def _config_file(args: argparse.Namespace) -> RewardConfig:
    """``--config FILE``: the settings as saved (a training job writes them so);
    a setting flag beside it would silently lose to the file, so it is refused."""
    fresh = argparse.ArgumentParser()
    register(fresh.add_subparsers())
    defaults = vars(fresh.parse_args(["train-rm", "--pairs", "x", "--out", "x"]))
    given = [
        "--" + d.replace("_", "-")
        for d in SETTING_DESTS
        if vars(args)[d] != defaults[d]
    ]
    if given:
        raise ValueError(
            f"--config {args.config} takes every setting; drop {', '.join(given)}"
        )
    try:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {args.config}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {args.config}: not a JSON object")
    known = {f.name for f in dataclasses.fields(RewardConfig)}
    if unknown := sorted(set(data) - known):
        raise ValueError(f"--config {args.config}: unknown settings {unknown}")
    if isinstance(data.get("margins"), list):
        data["margins"] = tuple(data["margins"])
    try:
        return RewardConfig(**data)
    except TypeError as exc:
        raise ValueError(f"--config {args.config}: {exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.data import PairFormatError, read_pairs
    from training.models import ModelRefError, resolve_model_ref
    from training.reward_model import read_meta
    from training.rm_checkpoint import check_out_dir
    from training.train_rm import train

    # Everything that can be wrong with the inputs is checked before any training.
    try:
        config = _config_file(args) if args.config else _config_flags(args)
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
        validation_pairs = (
            read_pairs(args.validation, skipped=skipped) if args.validation else None
        )
        if validation_pairs is not None and not validation_pairs:
            raise ValueError("no pairs in --eval " + ", ".join(args.validation))
    except (ValueError, ModelRefError, FileNotFoundError, FileExistsError) as exc:
        return _fail(_read_error(exc, args.skip_invalid))
    if not pairs:
        return _fail("no pairs in " + ", ".join(args.pairs))
    _report_skipped(skipped)

    from training import distributed

    # Under torchrun: join the process group; only rank 0 prints.
    world = distributed.init(args.device)
    bars = _PairBars(tqdm, "train-rm")
    try:
        result = train(
            pairs,
            config,
            progress=bars.message if world.is_main else None,
            counter=bars.count if world.is_main else None,
            eval_pairs=eval_pairs,
            validation_pairs=validation_pairs,
            out_dir=args.out,
            artifacts_dir=args.artifacts_dir,
        )
    finally:
        distributed.shutdown()
    bars.close()
    if world.is_main:
        print(metrics_table(result.metrics))
        print(f"saved {result.out_dir}")
        if world.size > 1:
            print(f"data parallel: {world.as_dict(config.batch_size)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.data import read_pairs
    from training.reward_model import load_reward_model, read_meta
    from training.rm_eval import evaluate_pairs

    try:
        meta = read_meta(args.model)
        model, tokenizer = load_reward_model(args.model, device=args.device)
        skipped: list[Any] | None = [] if args.skip_invalid else None
        if args.offset < 0:
            raise ValueError(f"--offset {args.offset}: expected 0 or more")
        limit = None if args.limit is None else args.offset + args.limit
        pairs = read_pairs(args.pairs, limit=limit, skipped=skipped)[args.offset :]
        if not pairs:
            raise ValueError(
                f"no pairs to evaluate after --offset {args.offset} "
                f"(the files hold fewer pairs)"
            )
    except (ValueError, OSError) as exc:
        return _fail(_read_error(exc, args.skip_invalid))
    _report_skipped(skipped)
    predictions: list[dict[str, Any]] | None = None
    if args.predictions:
        try:
            out = open(args.predictions, "x", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            return _fail(f"cannot write --predictions {args.predictions}: {exc}")
        predictions = []
    max_length = args.max_length or int(meta.get("config", {}).get("max_length", 512))
    bars = _PairBars(tqdm, "eval-rm")
    metrics = evaluate_pairs(
        model,
        tokenizer,
        pairs,
        max_length=max_length,
        batch_size=args.batch_size,
        device=args.device,
        counter=lambda done, total: bars.count("eval", done, total),
        predictions=predictions,
    )
    bars.close()
    if predictions is not None:
        with out:
            for rec in predictions:
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    metrics["skipped_invalid"] = len(skipped or [])
    print(json.dumps({"model": str(args.model), "pairs": args.pairs, **metrics}))
    return 0
