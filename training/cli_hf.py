"""``python -m training export-hf``: a reward model for Hugging Face loaders."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-hf",
        help="write a reward model as AutoModelForSequenceClassification loads it",
        description=(
            "Write a copy of a Pairloop reward model that "
            "AutoModelForSequenceClassification.from_pretrained(OUT) loads with the "
            "same scores (logits[:, 0]). Decoder bases become their standard "
            "*ForSequenceClassification; encoder bases (mean pooling, which no "
            "standard head does) need trust_remote_code=True."
        ),
    )
    p.add_argument("--model", required=True, metavar="DIR", help="a reward model")
    p.add_argument("--out", required=True, metavar="DIR", help="a new directory")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from training.reward_model import export_hf

    try:
        info = export_hf(args.model, args.out)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2, sort_keys=True))
    remote = info["loader"] == "remote_code"
    print(
        "load with: AutoModelForSequenceClassification.from_pretrained("
        f"{args.out!r}{', trust_remote_code=True' if remote else ''})",
        file=sys.stderr,
    )
    return 0
