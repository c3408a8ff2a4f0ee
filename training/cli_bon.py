"""``python -m training best-of-n`` — one rejection-sampling round from a prompt file.

Writes into ``--out``: ``sft.jsonl`` (best sample per prompt as ``{"messages": ...}``,
TRL SFTTrainer's conversational format), ``samples.jsonl`` (every sample with its
score), ``pairs.jsonl`` (proposed human comparisons) and ``stats.json``.
Bad input (unreadable prompt lines, n < 1, prompts too long for the model, an
unknown backend or model) exits with status 2 before anything is sampled.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.rejection import PAIR_STRATEGIES, RoundConfig, RoundResult, run_round
from training.sampling import (
    BACKENDS,
    DEFAULT_POLICY,
    BadSamplingInput,
    PromptTooLongError,
)


class PromptFileError(BadSamplingInput):
    """A prompt file line that is not one of the accepted formats."""


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        yield from handle


def _conversation(record: Any) -> list[dict[str, str]]:
    """One prompt file record as a conversation; raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        for m in messages:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise ValueError("each message needs string 'role' and 'content'")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        # A conversation ending in a reply (SFT data) re-samples that reply.
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages:
            raise ValueError("'messages' has no prompt before the assistant reply")
        return messages
    if "prompt" in record:
        text = record["prompt"]
    elif "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns:
            raise ValueError("'turns' must be a non-empty list")
        # MT-bench: ["first", "second"]; arena-hard: [{"content": "first"}].
        # The first turn is the prompt; later turns depend on the first answer.
        text = turns[0].get("content") if isinstance(turns[0], dict) else turns[0]
    else:
        raise ValueError("expected a 'prompt', 'messages' or 'turns' field")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the prompt is empty")
    return [{"role": "user", "content": text}]


def read_prompts(path: str | Path) -> list[tuple[int, list[dict[str, str]]]]:
    """(line number, conversation) for every non-blank line of a .jsonl(.gz) file."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: no such file")
    prompts = []
    try:
        for number, line in enumerate(_open_text(path), start=1):
            if not line.strip():
                continue
            try:
                prompts.append((number, _conversation(json.loads(line))))
            except ValueError as exc:  # JSONDecodeError is a ValueError too
                raise PromptFileError(f"{path}:{number}: {exc}") from exc
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise PromptFileError(f"{path}: cannot read: {exc}") from exc
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts


def parse_pair_mix(text: str) -> dict[str, float]:
    """``best_vs_runner_up=0.5,closest=0.5`` -> dict."""
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad pair mix entry {part!r}; use name=weight with names "
                f"{', '.join(PAIR_STRATEGIES)}"
            ) from None
    return mix


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "best-of-n",
        help="sample N responses per prompt, keep the best, propose pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompts", required=True, help=".jsonl or .jsonl.gz file")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy model ref")
    parser.add_argument("--reward", help="reward model directory (omit for round 0)")
    parser.add_argument("--backend", default="transformers", help="/".join(BACKENDS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    # The measured defaults (docs/benchmarks.md, bench/sampling_defaults.py), as
    # Project.temperature/top_p.
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="use only the first LIMIT prompts")
    parser.add_argument("--pairs-per-prompt", type=int, default=1)
    parser.add_argument(
        "--pair-mix",
        type=parse_pair_mix,
        default=None,
        help="e.g. best_vs_runner_up=1,closest=1 (default: equal shares)",
    )
    parser.add_argument("--adaptive", action="store_true", help="adaptive N")
    parser.add_argument(
        "--adaptive-compare",
        action="store_true",
        help="draw all N and report what adaptive N would have saved",
    )
    parser.add_argument("--device", help="transformers backend: cpu, cuda, ...")
    parser.add_argument(
        "--batch-rows", type=int, help="rows decoded together (64 CPU, 512 GPU)"
    )
    parser.add_argument("--base-url", help="openai backend: e.g. http://host:8000/v1")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.set_defaults(func=main)


def _sampler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import os

    if args.backend == "transformers":
        kw: dict[str, Any] = {"max_batch_rows": args.batch_rows}  # None: default
        if args.device:
            kw["device"] = args.device
        return kw
    if args.backend == "openai":
        kw = {
            "api_key": os.environ.get(args.api_key_env),
            "max_concurrency": args.max_concurrency,
        }
        if args.base_url:
            kw["base_url"] = args.base_url
        return kw
    return {}


def write_outputs(result: RoundResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sft.jsonl", "w", encoding="utf-8") as handle:
        for example in result.sft_examples():
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    with open(out / "samples.jsonl", "w", encoding="utf-8") as handle:
        for p in result.prompts:
            for s in p.samples:
                record = {
                    "prompt_index": p.index,
                    "messages": p.conversation,
                    "sample_index": s.index,
                    "response": s.text,
                    "score": s.score,
                    "token_count": s.token_count,
                    "finish_reason": s.finish_reason,
                    "duplicate_of": s.duplicate_of,
                    "is_best": s.index == p.best_index,
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as handle:
        for pair in result.pairs:
            record = {"messages": result.prompts[pair.prompt_index].conversation}
            record |= asdict(pair)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    stats = {"config": asdict(result.config), **result.stats}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


def throughput_line(result: RoundResult, sampling_s: float) -> str:
    """Generated tokens and their rate over the sampling phase (scoring excluded)."""
    tokens = sum(s.token_count for p in result.prompts for s in p.samples)
    rate = f"{tokens / sampling_s:.1f}" if sampling_s > 0 else "-"
    return f"sampling: {tokens} tokens in {sampling_s:.1f} s, {rate} tokens/s"


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.sampling import make_sampler

    try:
        config = RoundConfig(
            n=args.n,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            pairs_per_prompt=args.pairs_per_prompt,
            adaptive=args.adaptive or args.adaptive_compare,
            adaptive_compare=args.adaptive_compare,
        )
        if args.pair_mix is not None:
            config.pair_mix = args.pair_mix
        config.validate()
        if args.backend not in BACKENDS:
            raise BadSamplingInput(
                f"unknown sampler backend {args.backend!r}; "
                f"choose one of {', '.join(BACKENDS)}"
            )
        lines = read_prompts(args.prompts)
        if args.limit is not None:
            lines = lines[: args.limit]
        prompts = [conv for _, conv in lines]
        scorer = None
        if args.reward:
            if not Path(args.reward).is_dir():
                raise BadSamplingInput(f"--reward {args.reward}: no such directory")
            from training.scoring import RewardScorer

            try:
                scorer = RewardScorer(args.reward)
            except OSError as exc:  # not a reward-model version, unreadable files
                raise BadSamplingInput(f"--reward {args.reward}: {exc}") from exc
        if config.adaptive and scorer is None:
            raise BadSamplingInput("--adaptive needs --reward")
        sampler = make_sampler(args.backend, args.policy, **_sampler_kwargs(args))
        try:
            sampler.validate(prompts, config.max_new_tokens)
        except PromptTooLongError as exc:
            raise BadSamplingInput(
                f"{args.prompts}:{lines[exc.index][0]}: {exc}"
            ) from exc

        total = len(prompts) * config.n
        started = time.perf_counter()
        sampled = [started]  # when the latest batch of samples came back
        with tqdm(total=total, unit="sample", desc="best-of-n") as bar:

            def on_samples(done: int, planned: int) -> None:
                # The sampler reports after every batch; adaptive N may stop early.
                sampled[0] = time.perf_counter()
                bar.update(max(0, done - bar.n))

            def progress(fraction: float, message: str) -> None:
                bar.set_postfix_str(message, refresh=True)

            result = run_round(
                prompts,
                sampler,
                scorer,
                config,
                progress=progress,
                on_samples=on_samples,
            )
    except ValueError as exc:  # BadSamplingInput, UnknownModelError, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_outputs(result, out)
    print(
        f"{result.stats['samples']} samples for {len(prompts)} prompts, "
        f"{len(result.sft_examples())} SFT examples, {len(result.pairs)} pairs "
        f"-> {out}"
    )
    print(throughput_line(result, sampled[0] - started))
    return 0
