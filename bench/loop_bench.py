"""The closed loop on CPU: does the policy get better, as judged by a reward model
that did not pick its training data?

Each iteration: a best-of-N round (``training.rejection.run_round``) from the
current policy on the training prompts, scored by the *selector* reward model →
the data guard (``training.data_guard``, all rounds so far pooled) →
``train-policy`` (``training.train_policy``) → ``eval-policy``
(``training.eval_policy``) of the new policy against the *base* policy on
evaluation prompts that are never trained on, scored by the *judge*.

Data (default): ``../shared/data/hh-harmless-dev.jsonl.gz`` split four ways by a
hash of the line: selector-RM pairs, judge-RM pairs, training prompts and
evaluation prompts, so the judge never saw the selector's data and neither RM
saw the policy's prompts. ``--prompts FILE`` takes the prompts from another file
instead (split in two by hash); ``--judge DIR`` / ``--selector DIR`` use
existing reward-model versions. The eval pairs are also scored by the selector,
which shows how much of the selector's win rate is self-grading.

    python bench/loop_bench.py                      # ~15 min on 2 CPU cores
    python bench/loop_bench.py --json var/loop_bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.data_guard import GuardConfig  # noqa: E402  (pure Python, cheap)

DATA = REPO.parent / "shared" / "data"
HH = DATA / "hh-harmless-dev.jsonl.gz"
BASE = "builtin:smollm2-135m-instruct"


def bucket(text: str, k: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % k


def split_hh(path: Path) -> dict[str, list[Any]]:
    """HH pairs into selector / judge / train-prompt / eval-prompt groups by a hash
    of the conversation (one conversation never lands in two groups)."""
    from training.data import read_pairs

    groups: dict[str, list[Any]] = {
        "selector": [],
        "judge": [],
        "train": [],
        "eval": [],
    }
    names = list(groups)
    for pair in read_pairs(path, skipped=[]):  # a few HH lines have empty replies
        key = json.dumps(pair.conversation, sort_keys=True)
        groups[names[bucket(key, 4)]].append(pair)
    return groups


def usable_prompt(conv: list[dict[str, str]], max_chars: int) -> bool:
    return (
        conv[-1]["role"] == "user" and sum(len(m["content"]) for m in conv) <= max_chars
    )


def train_rm(pairs: list[Any], out: Path, seed: int, epochs: float) -> dict[str, Any]:
    from training.config import RewardConfig
    from training.train_rm import train

    config = RewardConfig(
        base="builtin:minilm-l6", num_epochs=epochs, seed=seed, max_length=256
    )
    started = time.perf_counter()
    result = train(pairs, config, out_dir=out)
    return {
        "pairs": len(pairs),
        "heldout_accuracy": result.metrics.get("eval", {}).get("accuracy"),
        "seconds": time.perf_counter() - started,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=Path, help="prompt file (default: HH prompts)")
    p.add_argument("--judge", type=Path, help="judge reward-model directory")
    p.add_argument("--selector", type=Path, help="selector reward-model directory")
    p.add_argument("--base", default=BASE)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--train-prompts", type=int, default=24)
    p.add_argument("--eval-prompts", type=int, default=24)
    p.add_argument("--max-prompt-chars", type=int, default=400)
    p.add_argument("--n", type=int, default=8, help="samples per prompt per round")
    p.add_argument("--eval-samples", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--mode", default="sft+dpo", choices=["sft", "dpo", "sft+dpo"])
    p.add_argument("--restart-from", default="base", choices=["base", "latest"])
    p.add_argument(
        "--sft-lr",
        type=float,
        default=1e-5,
        help="above the recipe's 2e-6: a few dozen examples must move the policy",
    )
    p.add_argument("--sft-epochs", type=float, default=3.0)
    p.add_argument(
        "--dpo-lr", type=float, default=5e-6, help="above RLHFlow's 5e-7, as --sft-lr"
    )
    p.add_argument("--dpo-epochs", type=float, default=2.0)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--margin", type=float, default=0.1, help="data-guard margin")
    p.add_argument(
        "--min-length-ratio",
        type=float,
        default=GuardConfig.min_length_ratio,
        help="data guard's length floor: share of the prompt's median sample length"
        " (0: off, the guard before 2026-12-07)",
    )
    p.add_argument(
        "--pair-length-band",
        type=float,
        default=GuardConfig.pair_length_band,
        help="data guard: a DPO pair's rejected answer within this length factor of"
        " the chosen one (0: the worst of all samples)",
    )
    p.add_argument(
        "--sft-fallback",
        action="store_true",
        help="data guard: a cut-off or short top sample gives way to the best that"
        " qualifies (default: the prompt is dropped)",
    )
    p.add_argument("--rm-pairs", type=int, default=300, help="pairs per reward model")
    p.add_argument("--rm-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=REPO / "var" / "loop_bench")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from training.cli_bon import read_prompts
    from training.config import EvalConfig, PolicyConfig
    from training.data_guard import (
        from_round_result,
        select_pairs,
        select_sft,
    )
    from training.eval_policy import bon_kl_bound, evaluate, format_report, win_rate
    from training.rejection import RoundConfig, run_round
    from training.sampling import TransformersSampler
    from training.scoring import RewardScorer
    from training.train_policy import prepare, train_policy

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    started = time.perf_counter()
    groups = split_hh(HH)
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    if args.prompts:
        convs = [c for _, c in read_prompts(args.prompts)]
        train_p = [c for c in convs if bucket(json.dumps(c, sort_keys=True), 2) == 0]
        eval_p = [c for c in convs if bucket(json.dumps(c, sort_keys=True), 2) == 1]
    else:
        train_p = [list(x.conversation) for x in groups["train"]]
        eval_p = [list(x.conversation) for x in groups["eval"]]
    train_p = [c for c in train_p if usable_prompt(c, args.max_prompt_chars)]
    eval_p = [c for c in eval_p if usable_prompt(c, args.max_prompt_chars)]
    train_p, eval_p = train_p[: args.train_prompts], eval_p[: args.eval_prompts]
    keys = {json.dumps(c, sort_keys=True) for c in train_p}
    assert not any(json.dumps(c, sort_keys=True) in keys for c in eval_p)
    print(f"{len(train_p)} training prompts, {len(eval_p)} evaluation prompts")

    rms = {}
    for role, given, seed in (("selector", args.selector, 1), ("judge", args.judge, 2)):
        if given:
            rms[role] = given
            out[f"{role}_rm"] = {"dir": str(given)}
            continue
        rms[role] = args.work / f"rm-{role}"
        info = train_rm(groups[role][: args.rm_pairs], rms[role], seed, args.rm_epochs)
        out[f"{role}_rm"] = info
        print(
            f"{role} RM: {info['pairs']} pairs, held-out accuracy "
            f"{fmt(info['heldout_accuracy'])}, {info['seconds']:.0f} s"
        )
    selector, judge = RewardScorer(rms["selector"]), RewardScorer(rms["judge"])
    base = TransformersSampler.from_ref(args.base, device="cpu")
    print(f"best-of-{args.n} analytic KL bound: {bon_kl_bound(args.n):.3f} nats")

    rounds: list[Any] = []
    current = base
    latest: Path | None = None
    out["iterations"] = []
    for it in range(1, args.iterations + 1):
        t0 = time.perf_counter()
        rconf = RoundConfig(
            n=args.n,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed + it,
            pairs_per_prompt=0,
        )
        result = run_round(train_p, current, selector, rconf)
        rounds.append(from_round_result(result, it - 1))
        t_round = time.perf_counter() - t0
        guard = GuardConfig(
            margin=args.margin,
            min_length_ratio=args.min_length_ratio,
            pair_length_band=args.pair_length_band,
            sft_fallback=args.sft_fallback,
        )
        sft, pairs = select_sft(rounds, guard), select_pairs(rounds, guard)
        sft_file = write_jsonl(args.work / f"sft-{it}.jsonl", sft.examples)
        dpo_file = write_jsonl(args.work / f"dpo-{it}.jsonl", pairs.examples)
        print(f"iteration {it}: round {t_round:.0f} s, SFT filters {sft.counts}")
        print(f"  DPO filters {pairs.counts}")
        config = PolicyConfig(
            mode=args.mode,
            base=args.base,
            restart_from=args.restart_from if latest else "base",
            latest=str(latest) if latest else None,
            sft_learning_rate=args.sft_lr,
            sft_epochs=args.sft_epochs,
            dpo_learning_rate=args.dpo_lr,
            dpo_epochs=args.dpo_epochs,
            beta=args.beta,
            batch_size=args.batch_size,
            seed=args.seed,
            device="cpu",
        )
        # sft+dpo runs the half that has data (a round whose best samples were
        # all cut off still yields best-vs-worst pairs).
        mode = args.mode
        if mode == "sft+dpo" and not (sft.examples and pairs.examples):
            mode = "sft" if sft.examples else "dpo"
        config.mode = mode
        need_sft, need_dpo = mode != "dpo", mode != "sft"
        if (need_sft and not sft.examples) or (need_dpo and not pairs.examples):
            print("  no usable training data after the guard: policy unchanged")
            out["iterations"].append(
                {"iteration": it, "guard_sft": sft.counts, "guard_dpo": pairs.counts,
                 "skipped": True}
            )  # fmt: skip
            continue
        t1 = time.perf_counter()
        prepared = prepare(config, [str(sft_file)], [str(dpo_file)])
        trained = train_policy(
            prepared,
            args.work / f"policy-{it}",
            extra_metrics={"guard_sft": sft.counts, "guard_dpo": pairs.counts},
        )
        t_train = time.perf_counter() - t1
        latest = trained.out_dir
        candidate = TransformersSampler(trained.model, trained.tokenizer)
        t2 = time.perf_counter()
        econf = EvalConfig(
            n_samples=args.eval_samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=10_000,
        )
        report = evaluate(eval_p, candidate, base, judge, econf)
        convs = [eval_p[s["prompt_index"]] for s in report["samples"]]
        sel_c = selector(convs, [s["candidate"] for s in report["samples"]])
        sel_r = selector(convs, [s["reference"] for s in report["samples"]])
        report["selector_win"] = win_rate(sel_c, sel_r)
        t_eval = time.perf_counter() - t2
        seconds = time.perf_counter() - t0
        print(f"  judge: {format_report(report)}")
        print(
            f"  selector (self-grading) win rate "
            f"{fmt(report['selector_win']['win_rate'])}; time: round {t_round:.0f} s, "
            f"train {t_train:.0f} s, eval {t_eval:.0f} s, iteration {seconds:.0f} s"
        )
        # The paired samples, for reading and for analyses after the run.
        write_jsonl(args.work / f"eval-samples-{it}.jsonl", report.pop("samples"))
        out["iterations"].append(
            {
                "iteration": it,
                "round_stats": {
                    k: result.stats.get(k)
                    for k in ("samples", "duplicates", "finish_reasons", "mean_tokens")
                }
                | {"reward_mean": (result.stats.get("reward") or {}).get("mean")},
                "guard_sft": sft.counts,
                "guard_dpo": pairs.counts,
                "mode": mode,
                "train": {
                    k: v for k, v in trained.metrics.items() if k in ("sft", "dpo")
                },
                "eval": report,
                "seconds": {
                    "round": t_round,
                    "train": t_train,
                    "eval": t_eval,
                    "iteration": seconds,
                },
            }
        )
        current = candidate
    out["total_seconds"] = time.perf_counter() - started
    print(f"\ntotal {out['total_seconds']:.0f} s")
    print(
        "| iteration | win rate vs base [95 % CI] | reward gain | length ratio | "
        "distinct-2 cand / base | KL | truncation cand / base | both complete: "
        "win rate [95 % CI] (pairs) | selector win | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in out["iterations"]:
        if r.get("skipped"):
            print(f"| {r['iteration']} | no training data after the guard |")
            continue
        e, w = r["eval"], r["eval"]["win"]
        b = e["win_both_complete"]
        print(
            f"| {r['iteration']} | {fmt(w['win_rate'])} [{fmt(w['ci_low'])}, "
            f"{fmt(w['ci_high'])}] | {fmt(e['reward_gain'], '+.3f')} | "
            f"{fmt(e['length_ratio'])} | {fmt(e['candidate']['distinct_2'])} / "
            f"{fmt(e['reference']['distinct_2'])} | {fmt(e.get('kl'))} | "
            f"{fmt(e['candidate_truncation_rate'])} / "
            f"{fmt(e['reference_truncation_rate'])} | "
            f"{fmt(b['win_rate'])} [{fmt(b['ci_low'])}, {fmt(b['ci_high'])}] "
            f"({b['n']}) | "
            f"{fmt(e['selector_win']['win_rate'])} | {r['seconds']['iteration']:.0f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
