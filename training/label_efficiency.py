"""How many labels a selection strategy saves: simulated labelling on real labels.

The core of ``bench/label_efficiency.py`` and of a project's "strategy gain" job
(labelapp.loop.strategy_gain). Simulated annotators answer from real human labels:
each pair carries the answers its human annotators gave (``p_a`` each, in the
pair's orientation) and a simulated label is one of them drawn at random. A fixed
evaluation split, which no strategy may select from, is scored against the pair's
aggregated human label (ties left out).

For every seed and strategy: start from the same random first batch, then per step
score the unlabelled pool with the current reward model, let the strategy
(training/selection.py) pick the next batch, have it "labelled", and retrain the
reward model from scratch with fixed hyper-parameters, up to the last budget.

THE REWARD MODEL HERE IS A CHEAP STAND-IN, so a run fits on a 2-core machine:
frozen ``builtin:minilm-l6`` mean-pooled embeddings of (conversation, reply),
computed once, with an ensemble of K linear reward heads trained by the
Bradley-Terry loss, each on its own bootstrap resample of the labels (so the
heads' disagreement is epistemic). It is not the fine-tuned train-rm model; the
strategies' relative gains are what it measures.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from training.data import Formatter, Pair
from training.selection import Candidate, order_pool

STRATEGIES: dict[str, str | dict[str, float]] = {
    "random": "random",
    "uncertainty": "uncertainty",
    "disagreement": "disagreement",
    "gap": "gap",
    "mix": {"uncertainty": 0.5, "random": 0.5},
}


@dataclass(frozen=True)
class HeadConfig:
    """The stand-in reward model's fixed hyper-parameters."""

    heads: int = 5
    steps: int = 300
    l2: float = 1e-3


@torch.no_grad()
def embed(
    pairs: Sequence[Pair],
    max_length: int = 256,
    cache: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``[n, 2, 384]`` mean-pooled MiniLM embeddings of (conversation, reply A/B);
    with ``cache``, stored there by content (the same texts never run twice)."""
    key = hashlib.sha256()
    for p in pairs:
        key.update(
            json.dumps([p.id, p.conversation, p.response_a, p.response_b]).encode()
        )
    key.update(str(max_length).encode())
    path = cache / f"emb-{key.hexdigest()[:16]}.pt" if cache else None
    if path is not None and path.is_file():
        return torch.load(path)
    from transformers import AutoModel, AutoTokenizer

    from training.models import resolve_model_ref

    base = resolve_model_ref("builtin:minilm-l6")
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModel.from_pretrained(str(base)).eval()
    fmt = Formatter(tok, max_length, is_encoder=True)
    rows = []
    for p in pairs:
        prefix, a, b = fmt.encode_pair(p)
        rows += [prefix + a, prefix + b]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.zeros(len(rows), model.config.hidden_size)
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        width = max(len(rows[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, : len(rows[i])] = torch.tensor(rows[i])
            mask[j, : len(rows[i])] = 1
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        out[idx] = (hidden * m).sum(1) / m.sum(1)
        if progress is not None:
            progress(start + len(idx), len(rows))
    out = out.view(len(pairs), 2, -1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out


def stderr_progress() -> Callable[[int, int], None]:
    t0 = time.perf_counter()

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(
            f"\rembedding {done}/{total} replies ({time.perf_counter() - t0:.0f} s)",
            end=end,
            file=sys.stderr,
        )

    return show


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore. The heads' matrices are tiny:
    one thread fits them ~20x faster than two when the cores are busy (measured:
    0.13 s vs 2.6 s a fit, 60 pairs x 384 dims, beside a sampling job)."""
    was = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def fit_heads(
    x: torch.Tensor, p_a: torch.Tensor, *, heads: int, seed: int, steps: int, l2: float
) -> torch.Tensor:
    """K linear reward heads ``[K, D]`` on ``x = emb_a − emb_b`` ``[n, D]``, each
    trained by the soft Bradley-Terry loss on its own Poisson(1) bootstrap."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    weights = torch.poisson(torch.ones(n, heads), generator=g)  # [n, K]
    w = (torch.randn(heads, d, generator=g) * 0.01).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.02)
    for _ in range(steps):
        logit = x @ w.T  # [n, K]
        loss = -(
            p_a[:, None] * torch.nn.functional.logsigmoid(logit)
            + (1 - p_a[:, None]) * torch.nn.functional.logsigmoid(-logit)
        )
        loss = (loss * weights).sum(0) / weights.sum(0).clamp(min=1)
        loss = loss.sum() + l2 * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def accuracy(w: torch.Tensor, x: torch.Tensor, truth: Sequence[float | None]) -> float:
    diff = (x @ w.T).mean(-1)
    right = [
        (float(d) > 0) == (t > 0.5)
        for d, t in zip(diff, truth, strict=True)
        if t is not None
    ]
    return sum(right) / len(right)


def run_curve(
    strategy: str | Mapping[str, float],
    *,
    seed: int,
    pool_x: torch.Tensor,
    pool_answers: Sequence[Sequence[float]],
    eval_x: torch.Tensor,
    eval_truth: Sequence[float | None],
    budgets: Sequence[int],
    heads: HeadConfig,
) -> list[float]:
    """Held-out accuracy after each budget of simulated labels picked by
    ``strategy`` (the first budget at random, the same for every strategy)."""
    rng = random.Random(seed)
    n = len(pool_answers)
    # The same first batch for every strategy of a seed (a cold start is random).
    labelled = random.Random(seed).sample(range(n), budgets[0])
    answer_rng = random.Random(seed + 1000)
    answers: dict[int, float] = {}

    def label(idx: list[int]) -> None:
        for i in idx:
            # Each simulated annotator answers as one human annotator of the pair.
            answers[i] = answer_rng.choice(list(pool_answers[i]))

    label(labelled)
    curve = []
    w = torch.zeros(heads.heads, pool_x.shape[1])  # replaced after the first step
    for step, budget in enumerate(budgets):
        if step:
            rest = [i for i in range(n) if i not in answers]
            diff = pool_x[rest] @ w.T  # [m, K]
            mean, var = diff.mean(-1), diff.var(-1, unbiased=False)
            pool = [
                Candidate(str(i), float(m), float(v))
                for i, m, v in zip(rest, mean, var, strict=True)
            ]
            k = min(budget - len(answers), len(rest))
            picked = order_pool(pool, strategy, rng=rng)[:k]
            label([rest[j] for j in picked])
        idx = sorted(answers)
        w = fit_heads(
            pool_x[idx],
            torch.tensor([answers[i] for i in idx]),
            heads=heads.heads,
            seed=seed * 7919 + step,
            steps=heads.steps,
            l2=heads.l2,
        )
        curve.append(accuracy(w, eval_x, eval_truth))
    return curve


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % interval across ``values``."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return m, 1.96 * sd / math.sqrt(len(values))


def labels_to_reach(
    curve: Sequence[float], budgets: Sequence[int], target: float
) -> float:
    """Labels at which ``curve`` first reaches ``target`` (linear interpolation
    between budgets); ``inf`` if it never does."""
    for i, acc in enumerate(curve):
        if acc >= target:
            if i == 0:
                return float(budgets[0])
            lo, hi = curve[i - 1], acc
            frac = (target - lo) / (hi - lo) if hi > lo else 1.0
            return budgets[i - 1] + frac * (budgets[i] - budgets[i - 1])
    return math.inf


def summarise(
    curves: Mapping[str, Sequence[Sequence[float]]], budgets: Sequence[int]
) -> dict:
    """Per strategy: the mean curve with its CI, and the labels needed to reach
    random's final accuracy — per seed (against that seed's random final), their
    mean ± CI when every seed reaches it, and on the mean curves. Needs
    ``curves["random"]``."""
    random_final = [c[-1] for c in curves["random"]]
    target = sum(random_final) / len(random_final)
    out: dict = {"random_final": target, "strategies": {}}
    for name, runs in curves.items():
        per_seed = [
            labels_to_reach(c, budgets, rf)
            for c, rf in zip(runs, random_final, strict=True)
        ]
        mean_curve = [sum(c[i] for c in runs) / len(runs) for i in range(len(budgets))]
        finite = [x for x in per_seed if math.isfinite(x)]
        row: dict = {
            "curve": [list(mean_ci([c[i] for c in runs])) for i in range(len(budgets))],
            "per_seed": [x if math.isfinite(x) else None for x in per_seed],
            "reached": len(finite),
            "seeds": len(per_seed),
            "on_mean_curve": labels_to_reach(mean_curve, budgets, target),
        }
        if len(finite) == len(per_seed):
            m, h = mean_ci(finite)
            row["labels"], row["labels_ci"] = m, h
            row["saved"] = 1.0 - m / budgets[-1]
        out["strategies"][name] = row
        if not math.isfinite(row["on_mean_curve"]):
            row["on_mean_curve"] = None
    return out
