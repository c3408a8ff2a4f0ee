"""Labels vs reward-model accuracy per pair-selection strategy (issue 17).

Simulated annotators answer from real human labels: the HH-harmless dev pairs
(one human label each) or PandaLM's test set, where each simulated answer comes
from one of its three human annotators drawn at random (noisy, disagreeing
oracles; "0" = tie answers p_a = ½). A fixed evaluation split, which no strategy
may select from, is scored against the human label (PandaLM: the annotators'
majority, ties left out).

For every seed and strategy: start from the same random 100 labels, then per step
score the unlabelled pool with the current reward model, let the strategy
(training/selection.py) pick the next 100 pairs, have them "labelled", and retrain
the reward model from scratch with fixed hyper-parameters — up to 800 labels.

THE REWARD MODEL HERE IS A CHEAP STAND-IN, so the bench fits on a 2-core
machine: frozen builtin:minilm-l6 mean-pooled embeddings of (conversation, reply),
computed once and cached under var/, with an ensemble of K linear reward heads
trained by the Bradley-Terry loss, each on its own bootstrap resample of the
labels (so the heads' disagreement is epistemic). It is not the fine-tuned
train-rm model; the strategies' relative gains are what it measures.

    python bench/label_efficiency.py                       # HH dev pairs
    python bench/label_efficiency.py --data pandalm
    python bench/label_efficiency.py --pool A.jsonl --eval B.jsonl

Prints the accuracy curve per strategy (mean over seeds, 95 % CI across seeds)
and the labels each strategy needs to reach random's final accuracy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.data import Pair, read_pairs  # noqa: E402
from training.label_efficiency import (  # noqa: E402
    STRATEGIES,
    HeadConfig,
    embed,
    labels_to_reach,
    mean_ci,
    run_curve,
    stderr_progress,
    torch_threads,
)
from training.rm_data import split_train_eval  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


@dataclass
class Task:
    """Pairs with the simulated annotators' possible answers (p_a per annotator)."""

    pairs: list[Pair]
    answers: list[list[float]]  # per pair: the answers an annotator may give
    truth: list[float | None]  # evaluation label (None: tie, left out)


def pandalm_pairs() -> Task:
    with gzip.open(DATA / "pandalm-testset-v1.json.gz") as f:
        rows = json.loads(f.read())
    pairs, answers, truth = [], [], []
    value = {"0": 0.5, "1": 1.0, "2": 0.0}
    for r in rows:
        prompt = r["instruction"] + (("\n\n" + r["input"]) if r["input"] else "")
        pairs.append(
            Pair(
                conversation=[{"role": "user", "content": prompt}],
                response_a=r["response1"],
                response_b=r["response2"],
                p_a=0.5,
                id=f"pandalm-{r['idx']}",
            )
        )
        votes = [value[str(r[f"annotator{k}"])] for k in (1, 2, 3)]
        answers.append(votes)
        wins = sum(v == 1.0 for v in votes) - sum(v == 0.0 for v in votes)
        truth.append(None if wins == 0 else float(wins > 0))
    return Task(pairs, answers, truth)


def file_task(paths: list[str]) -> Task:
    pairs = read_pairs(paths, skipped=[])
    return Task(
        pairs,
        [[p.p_a] for p in pairs],
        [p.p_a if p.p_a != 0.5 else None for p in pairs],
    )


def swap_half(task: Task, seed: int = 0) -> Task:
    """Put the chosen reply second in half the pairs (HH stores it first), so no
    strategy or model can profit from the file's order."""
    rng = random.Random(seed)
    pairs, answers, truth = [], [], []
    for p, a, t in zip(task.pairs, task.answers, task.truth, strict=True):
        if rng.random() < 0.5:
            p = Pair(
                conversation=p.conversation,
                response_a=p.response_b,
                response_b=p.response_a,
                p_a=1.0 - p.p_a,
                strength=p.strength,
                id=p.id,
            )
            a = [1.0 - x for x in a]
            t = None if t is None else 1.0 - t
        pairs.append(p)
        answers.append(a)
        truth.append(t)
    return Task(pairs, answers, truth)


def subset(task: Task, ids: set[str]) -> Task:
    keep = [i for i, p in enumerate(task.pairs) if p.id in ids]
    return Task(
        [task.pairs[i] for i in keep],
        [task.answers[i] for i in keep],
        [task.truth[i] for i in keep],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["hh", "pandalm"], default="hh")
    ap.add_argument("--pool", nargs="+", default=None, metavar="FILE")
    ap.add_argument("--eval", nargs="+", default=None, metavar="FILE")
    ap.add_argument("--eval-fraction", type=float, default=0.3,
                    help="held out by hashed pair id when --eval is not given")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--max-labels", type=int, default=800)
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="head training steps")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    if args.pool:
        pool_task = swap_half(file_task(args.pool))
        if args.eval:
            eval_task = swap_half(file_task(args.eval), seed=1)
        else:
            train, held = split_train_eval(pool_task.pairs, args.eval_fraction)
            eval_task = subset(pool_task, {p.id for p in held})
            pool_task = subset(pool_task, {p.id for p in train})
        source = ", ".join(args.pool)
    else:
        task = (
            pandalm_pairs()
            if args.data == "pandalm"
            else file_task([str(DATA / "hh-harmless-dev.jsonl.gz")])
        )
        task = swap_half(task)
        train, held = split_train_eval(task.pairs, args.eval_fraction)
        pool_task = subset(task, {p.id for p in train})
        eval_task = subset(task, {p.id for p in held})
        source = args.data
    cache = ROOT / "var" / "label_efficiency"
    pool_emb = embed(pool_task.pairs, args.max_length, cache, stderr_progress())
    eval_emb = embed(eval_task.pairs, args.max_length, cache, stderr_progress())
    pool_x = pool_emb[:, 0] - pool_emb[:, 1]
    eval_x = eval_emb[:, 0] - eval_emb[:, 1]
    t_embed = time.perf_counter() - t_start

    top = min(args.max_labels, len(pool_task.pairs))
    budgets = list(range(args.step, top + 1, args.step))
    names = args.strategies.split(",")
    curves: dict[str, list[list[float]]] = {name: [] for name in names}
    for seed in range(args.seeds):
        for name in names:
            with torch_threads(1):  # tiny matrices: threads only contend
                curve = run_curve(
                    STRATEGIES[name],
                    seed=seed,
                    pool_x=pool_x,
                    pool_answers=pool_task.answers,
                    eval_x=eval_x,
                    eval_truth=eval_task.truth,
                    budgets=budgets,
                    heads=HeadConfig(args.heads, args.steps, args.l2),
                )
            curves[name].append(curve)
    wall = time.perf_counter() - t_start
    n_eval = sum(t is not None for t in eval_task.truth)

    print(
        f"label efficiency on {source}: pool {len(pool_task.pairs)} pairs, "
        f"eval {n_eval} pairs (never selectable), {args.seeds} seeds, "
        f"{args.step} labels per step"
    )
    print(
        "RM: CHEAP STAND-IN — frozen builtin:minilm-l6 embeddings (max length "
        f"{args.max_length}) + {args.heads} bootstrap linear BT heads "
        f"({args.steps} Adam steps, l2 {args.l2}), retrained from scratch per step"
    )
    header = "labels " + " ".join(f"{n:>16}" for n in names)
    print(header)
    for b_i, budget in enumerate(budgets):
        cells = []
        for name in names:
            m, h = mean_ci([c[b_i] for c in curves[name]])
            cells.append(f"{m:.4f}±{h:.4f}".rjust(16))
        print(f"{budget:>6} " + " ".join(cells))
    random_final = [c[-1] for c in curves["random"]] if "random" in curves else None
    result: dict = {
        "source": source,
        "pool": len(pool_task.pairs),
        "eval": n_eval,
        "seeds": args.seeds,
        "budgets": budgets,
        "curves": curves,
        "embed_s": t_embed,
        "wall_s": wall,
        "args": vars(args),
    }
    if random_final:
        target = sum(random_final) / len(random_final)
        print(
            f"labels needed to reach random's final ({budgets[-1]}-label) accuracy "
            f"{target:.4f} (per seed against that seed's random final; mean ± 95 % CI):"
        )
        result["labels_to_random_final"] = {}
        for name in names:
            per_seed = [
                labels_to_reach(c, budgets, rf)
                for c, rf in zip(curves[name], random_final, strict=True)
            ]
            finite = [x for x in per_seed if math.isfinite(x)]
            mean_curve = [
                sum(c[i] for c in curves[name]) / len(curves[name])
                for i in range(len(budgets))
            ]
            on_mean = labels_to_reach(mean_curve, budgets, target)
            if len(finite) == len(per_seed):
                m, h = mean_ci(finite)
                text = f"{m:.0f} ± {h:.0f}"
            else:
                text = f"not reached in {len(per_seed) - len(finite)} seeds"
            print(f"  {name:>13}: {text}; on the mean curve {on_mean:.0f}")
            result["labels_to_random_final"][name] = {
                "per_seed": per_seed,
                "mean_curve": on_mean,
            }
    print(f"wall time {wall:.0f} s (embedding {t_embed:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
