"""Evaluate a candidate policy against a reference: ``python -m training eval-policy``.

On a fixed set of evaluation prompts (never trained on) both policies draw
``n_samples`` answers per prompt with the *same* seeds (sample j of a prompt has
one seed for both, ``training.sampling.sample_seed``), so a pair differs by the
model only. A reward model scores every answer, and the report gives:

- the win rate of candidate over reference (ties count ½) with a Wilson interval;
- the mean reward gain, the mean length of each (tokens) and their ratio, the
  truncation rates, distinct-1/2 of each (Li et al. 2016);
- a Monte-Carlo estimate of KL(candidate ‖ reference): the mean over candidate
  samples y of log p_cand(y|x) − log p_ref(y|x), summed over y's tokens (Schulman's
  k1 estimator; unbiased, can be negative on few samples, so its standard error is
  reported too). Log-probabilities are of the *tempered* distributions
  (logits / temperature; top-p is not applied), which are the ones sampled when
  top_p = 1. The answer is re-tokenised from its text, so a tokenisation that
  differs from the sampled one makes the estimate approximate.

For best-of-N itself, :func:`bon_kl_bound` gives the analytic KL of the best-of-N
distribution from the base, log N − (N−1)/N (Stiennon et al. 2020; an upper bound,
Beirami et al. 2024).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from statistics import NormalDist
from typing import Any

from training import bon_stats
from training.config import EvalConfig, dataclass_help

# ------------------------------------------------------------------ statistics


def wilson_interval(
    successes: float, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval of a proportion (ties may add ½ successes)."""
    if n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def win_rate(
    candidate: Sequence[float],
    reference: Sequence[float],
    *,
    tie_epsilon: float = 0.0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired win rate of candidate rewards over reference rewards (ties ½)."""
    if len(candidate) != len(reference):
        raise ValueError(f"{len(candidate)} candidate vs {len(reference)} rewards")
    wins = ties = 0
    for c, r in zip(candidate, reference, strict=True):
        if abs(c - r) <= tie_epsilon:
            ties += 1
        elif c > r:
            wins += 1
    n = len(candidate)
    score = wins + 0.5 * ties
    lo, hi = wilson_interval(score, n, confidence)
    return {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": n - wins - ties,
        "win_rate": score / n if n else None,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": confidence,
    }


def mc_kl(
    candidate_logps: Sequence[float], reference_logps: Sequence[float]
) -> dict[str, float | None]:
    """KL(cand ‖ ref) ≈ mean of log p_cand(y) − log p_ref(y) over y ~ cand.

    Inputs are per-sample sequence log-probabilities (sums over the tokens of
    samples drawn from the candidate)."""
    if len(candidate_logps) != len(reference_logps):
        raise ValueError("one reference log-probability per candidate sample")
    diffs = [c - r for c, r in zip(candidate_logps, reference_logps, strict=True)]
    if not diffs:
        return {"kl": None, "kl_stderr": None, "n": 0}
    mean = sum(diffs) / len(diffs)
    var = (
        sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) if len(diffs) > 1 else 0
    )
    return {"kl": mean, "kl_stderr": math.sqrt(var / len(diffs)), "n": len(diffs)}


def bon_kl_bound(n: int) -> float:
    """KL of the best-of-n distribution from the base: log n − (n − 1)/n."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return math.log(n) - (n - 1) / n


def length_stats(
    candidate: Sequence[int], reference: Sequence[int]
) -> dict[str, float | None]:
    mc = sum(candidate) / len(candidate) if candidate else None
    mr = sum(reference) / len(reference) if reference else None
    return {
        "candidate_mean_tokens": mc,
        "reference_mean_tokens": mr,
        "length_ratio": mc / mr if mc is not None and mr else None,
    }


def distinct(texts: Sequence[str]) -> dict[str, float | None]:
    return {
        "distinct_1": bon_stats.distinct_n(texts, 1),
        "distinct_2": bon_stats.distinct_n(texts, 2),
    }


def summarize(
    *,
    candidate_rewards: Sequence[float],
    reference_rewards: Sequence[float],
    candidate_tokens: Sequence[int],
    reference_tokens: Sequence[int],
    candidate_truncated: Sequence[bool],
    reference_truncated: Sequence[bool],
    candidate_texts: Sequence[str],
    reference_texts: Sequence[str],
    candidate_logps: Sequence[float] | None = None,
    reference_logps: Sequence[float] | None = None,
    tie_epsilon: float = 0.0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every statistic of the report from paired per-sample values."""
    n = len(candidate_rewards)
    out: dict[str, Any] = {
        "win": win_rate(
            candidate_rewards,
            reference_rewards,
            tie_epsilon=tie_epsilon,
            confidence=confidence,
        ),
        "candidate_mean_reward": sum(candidate_rewards) / n if n else None,
        "reference_mean_reward": sum(reference_rewards) / n if n else None,
        **length_stats(candidate_tokens, reference_tokens),
        "candidate_truncation_rate": (
            sum(candidate_truncated) / len(candidate_truncated)
            if candidate_truncated
            else None
        ),
        "reference_truncation_rate": (
            sum(reference_truncated) / len(reference_truncated)
            if reference_truncated
            else None
        ),
        "candidate": distinct(candidate_texts),
        "reference": distinct(reference_texts),
    }
    out["reward_gain"] = (
        out["candidate_mean_reward"] - out["reference_mean_reward"] if n else None
    )
    # Length control: the pairs where neither sample was cut off, so a win cannot
    # come from the other side's missing end (a policy that learns to finish is
    # otherwise credited for the reference's truncation).
    both = [
        i for i in range(n) if not candidate_truncated[i] and not reference_truncated[i]
    ]
    out["win_both_complete"] = win_rate(
        [candidate_rewards[i] for i in both],
        [reference_rewards[i] for i in both],
        tie_epsilon=tie_epsilon,
        confidence=confidence,
    )
    d2c, d2r = out["candidate"]["distinct_2"], out["reference"]["distinct_2"]
    out["distinct_2_ratio"] = d2c / d2r if d2c is not None and d2r else None
    if candidate_logps is not None and reference_logps is not None:
        out |= mc_kl(candidate_logps, reference_logps)
    return out


# ------------------------------------------------------------------ log-probs


def response_ids(tokenizer: Any, text: str, stopped: bool, eos_id: int) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return [*ids, eos_id] if stopped else ids


def sequence_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    batch_size: int = 16,
) -> list[float]:
    """Sum of log p(response token | prefix) under ``model`` for each item, from
    the logits divided by ``temperature`` (greedy, T = 0, is treated as T = 1)."""
    import torch

    temp = temperature if temperature > 0 else 1.0
    device = next(model.parameters()).device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            rows = [
                (list(p), list(r))
                for p, r in zip(
                    prompts[start : start + batch_size],
                    responses[start : start + batch_size],
                    strict=True,
                )
            ]
            width = max(len(p) + len(r) for p, r in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (p, r) in enumerate(rows):
                ids[i, : len(p) + len(r)] = torch.tensor(p + r)
                mask[i, : len(p) + len(r)] = 1
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).logits.float()
            logp = torch.log_softmax(logits / temp, dim=-1).cpu()
            for i, (p, r) in enumerate(rows):
                if not r:
                    out.append(0.0)
                    continue
                # The token at position t is predicted by the logits at t - 1.
                pos = torch.arange(len(p) - 1, len(p) + len(r) - 1)
                out.append(float(logp[i, pos, torch.tensor(r)].sum()))
    return out


# ------------------------------------------------------------------ evaluation


def evaluate(
    prompts: Sequence[list[dict[str, str]]],
    candidate: Any,
    reference: Any,
    scorer: Any,
    config: EvalConfig | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Sample both policies (``TransformersSampler``s) with the same seeds, score,
    and summarise; returns the report with the per-sample records."""
    config = config or EvalConfig()
    kw = dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
    )
    started = time.perf_counter()
    n = config.n_samples
    cand = candidate.sample(prompts, n, **kw)
    if progress:
        progress(0.4, "candidate sampled")
    ref = reference.sample(prompts, n, **kw)
    if progress:
        progress(0.8, "reference sampled")
    convs = [list(p) for p in prompts for _ in range(n)]
    cand_flat = [c for rows in cand for c in rows]
    ref_flat = [c for rows in ref for c in rows]
    cand_r = scorer(convs, [c.text for c in cand_flat])
    ref_r = scorer(convs, [c.text for c in ref_flat])
    if progress:
        progress(0.9, "scored")

    tok = candidate.tokenizer
    eos = tok.eos_token_id
    if eos not in candidate.eos_ids:
        eos = candidate.eos_ids[0]
    prompt_ids = [candidate.encode(p) for p in prompts for _ in range(n)]
    resp_ids = [
        response_ids(tok, c.text, c.finish_reason == "stop", eos) for c in cand_flat
    ]
    if reference.tokenizer.get_vocab() != tok.get_vocab():
        cand_lp = ref_lp = None  # KL over different vocabularies is not defined here
    else:
        cand_lp = sequence_logprobs(
            candidate.model, prompt_ids, resp_ids, temperature=config.temperature
        )
        ref_lp = sequence_logprobs(
            reference.model, prompt_ids, resp_ids, temperature=config.temperature
        )
    report = summarize(
        candidate_rewards=cand_r,
        reference_rewards=ref_r,
        candidate_tokens=[c.token_count for c in cand_flat],
        reference_tokens=[c.token_count for c in ref_flat],
        candidate_truncated=[c.finish_reason == "length" for c in cand_flat],
        reference_truncated=[c.finish_reason == "length" for c in ref_flat],
        candidate_texts=[c.text for c in cand_flat],
        reference_texts=[c.text for c in ref_flat],
        candidate_logps=cand_lp,
        reference_logps=ref_lp,
        tie_epsilon=config.tie_epsilon,
        confidence=config.confidence,
    )
    report["prompts"] = len(prompts)
    report["config"] = asdict(config)
    report["seconds"] = time.perf_counter() - started
    report["samples"] = [
        {
            "prompt_index": i // n,
            "sample_index": i % n,
            "candidate": c.text,
            "reference": r.text,
            "candidate_reward": cr,
            "reference_reward": rr,
            "candidate_finish": c.finish_reason,
            "reference_finish": r.finish_reason,
        }
        for i, (c, r, cr, rr) in enumerate(
            zip(cand_flat, ref_flat, cand_r, ref_r, strict=True)
        )
    ]
    if progress:
        progress(1.0, "done")
    return report


def format_report(report: dict[str, Any]) -> str:
    w = report["win"]

    def f(v: Any, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    kl = report.get("kl")
    return (
        f"win rate {f(w['win_rate'])} [{f(w['ci_low'])}, {f(w['ci_high'])}] "
        f"({w['wins']}W/{w['ties']}T/{w['losses']}L of {w['n']}), "
        f"reward gain {f(report['reward_gain'], '+.3f')}, "
        f"length ratio {f(report['length_ratio'])}, "
        f"distinct-2 {f(report['candidate']['distinct_2'])} vs "
        f"{f(report['reference']['distinct_2'])}, "
        f"KL {f(kl)}±{f(report.get('kl_stderr'))}, "
        f"truncation {f(report['candidate_truncation_rate'])} vs "
        f"{f(report['reference_truncation_rate'])}"
        + (
            f"; both complete: win rate {f(b['win_rate'])} [{f(b['ci_low'])}, "
            f"{f(b['ci_high'])}] of {b['n']}"
            if (b := report.get("win_both_complete")) and b["n"]
            else ""
        )
    )


# ------------------------------------------------------------------ CLI


def register(subparsers: Any) -> None:
    d, h = EvalConfig(), dataclass_help(EvalConfig)
    p = subparsers.add_parser(
        "eval-policy",
        help="win rate, reward gain, length, diversity and KL of a candidate policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompts", required=True, help="evaluation prompts .jsonl(.gz)")
    p.add_argument("--candidate", required=True, metavar="DIR")
    p.add_argument("--reference", required=True, metavar="MODEL")
    p.add_argument("--reward", required=True, metavar="RMDIR")
    p.add_argument("--out", required=True, metavar="FILE", help="report (JSON)")
    p.add_argument("--n-samples", type=int, default=d.n_samples, help=h["n_samples"])
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--tie-epsilon", type=float, default=d.tie_epsilon)
    p.add_argument("--limit", type=int, help="use only the first LIMIT prompts")
    p.add_argument("--device", default=None)
    p.set_defaults(func=main)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)


def main(args: argparse.Namespace) -> int:
    from training.cli_bon import read_prompts
    from training.sampling import TransformersSampler

    try:
        config = EvalConfig(
            n_samples=args.n_samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            tie_epsilon=args.tie_epsilon,
            device=args.device,
        )
        lines = read_prompts(args.prompts)
        if args.limit is not None:
            lines = lines[: args.limit]
        prompts = [conv for _, conv in lines]
        if not Path(args.reward).is_dir():
            raise ValueError(f"--reward {args.reward}: no such directory")
        from training.scoring import RewardScorer

        try:
            scorer = RewardScorer(args.reward, device=args.device)
        except OSError as exc:
            raise ValueError(f"--reward {args.reward}: {exc}") from exc
        kw = {"device": args.device} if args.device else {}
        candidate = TransformersSampler.from_ref(args.candidate, **kw)
        reference = TransformersSampler.from_ref(args.reference, **kw)
        for sampler in (candidate, reference):
            sampler.validate(prompts, config.max_new_tokens)
    except ValueError as exc:  # bad prompts, model refs, configs, too-long prompts
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate(prompts, candidate, reference, scorer, config)
    report["candidate_ref"] = args.candidate
    report["reference_ref"] = args.reference
    report["reward_ref"] = args.reward
    write_json_atomic(Path(args.out), report)
    print(format_report(report))
    return 0
