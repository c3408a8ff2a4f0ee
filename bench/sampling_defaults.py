"""Which temperature and top-p make the builtin policy write coherent, diverse
samples? Measured, not guessed (issue 16 item 2).

For each (temperature, top-p) of a grid, the builtin policy (SmolLM2-135M-Instruct,
the engine rounds use) samples N answers to the same prompts with the same seeds,
and each setting is scored on what a round needs:

- **fluency**: the samples' mean per-token negative log-likelihood under the
  policy itself at T = 1, beside that of *reference* answers to the same prompts
  (the human-preferred HH-harmless replies, cut to the same token budget). Text
  sampled well has a likelihood close to the reference's (Holtzman et al., "The
  Curious Case of Neural Text Degeneration", 2020): much lower is the repetitive,
  generic text of greedy-like decoding, much higher is the incoherent tail that
  T = 1 / top-p = 1 samples (the issue's "90 % incoherent"). The gap is reported
  with a bootstrap 95 % interval over prompts. The reference answers were not
  chosen by any setting, and no setting sees them.
- **relevance**: the cosine similarity of each sample to its prompt in the
  sentence-embedding space of all-MiniLM-L6-v2 (the builtin encoder, trained so
  that questions and their answers embed close; it has nothing to do with the
  policy), beside the reference answers' own relevance. Incoherent samples drift
  off the prompt; this is the judge the recommendation uses.
- **diversity**: distinct-2 within each prompt's N samples, and the share of
  prompts whose samples are all identical (best-of-N then has nothing to pick).
- **degeneration**: the share of samples with a 4-gram repeated three times or
  more, the share cut off at the token limit (the data guard drops those) and
  the share that are empty.

    python bench/sampling_defaults.py                 # ~5 min on 2 CPU cores
    python bench/sampling_defaults.py --prompts 48 --n 4 --json var/sampling.json

It prints one row per setting and the recommended one: the highest relevance among
settings whose distinct-2 is at least 90 % of the best setting's and whose share
of repetitive samples is at most 10 %. (The NLL gap alone would pick T = 1: a 135M
policy finds the references' text about as unlikely as its own T = 1 samples, so
matching the references' likelihood is no sign of coherence at this size.)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
HH = DATA / "hh-harmless-dev.jsonl.gz"
POLICY = "builtin:smollm2-135m-instruct"
GRID = [(1.0, 1.0), (1.0, 0.9), (0.9, 0.95), (0.8, 0.95), (0.7, 0.9), (0.5, 0.9)]


def load(path: Path, k: int, seed: int) -> list[tuple[list[dict], str]]:
    """(single-turn conversation, preferred reply) of ``k`` HH pairs, drawn with
    ``seed`` from those whose prompt is at most 300 characters."""
    from training.data import read_pairs

    rows = []
    for p in read_pairs(path, skipped=[]):
        conv = list(p.conversation)
        if len(conv) == 1 and len(conv[0]["content"]) <= 300:
            rows.append((conv, p.response_a if p.p_a >= 0.5 else p.response_b))
    random.Random(seed).shuffle(rows)
    return rows[:k]


def nll_per_token(model, tokenizer, items: list[tuple[list[dict], str]], budget: int):
    """Mean per-token NLL under ``model`` of each reply (its first ``budget``
    tokens) after its conversation; None for an empty reply."""
    from training.eval_policy import sequence_logprobs

    prompts, replies, keep = [], [], []
    for i, (conv, text) in enumerate(items):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
        if not ids:
            continue
        prompts.append(
            tokenizer.apply_chat_template(
                conv, add_generation_prompt=True, return_dict=False
            )
        )
        replies.append(ids)
        keep.append(i)
    out: list[float | None] = [None] * len(items)
    for i, lp, ids in zip(
        keep, sequence_logprobs(model, prompts, replies), replies, strict=True
    ):
        out[i] = -lp / len(ids)
    return out


class Relevance:
    """Cosine similarity of a reply to its conversation's last user message in
    all-MiniLM-L6-v2's space (mean pooling, L2-normalised, as the model is used)."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from training.models import MINILM_REF, resolve_model_ref

        path = str(resolve_model_ref(MINILM_REF))
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]):
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 32):
                batch = self.tok(
                    texts[i : i + 32],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(out)

    def __call__(self, items: list[tuple[list[dict], str]]) -> list[float]:
        prompts = self.embed([c[-1]["content"] for c, _ in items])
        replies = self.embed([t if t.strip() else "." for _, t in items])
        return (prompts * replies).sum(-1).tolist()


def repeats(text: str, n: int = 4, times: int = 3) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return any(c >= times for c in grams.values())


def bootstrap_mean(values: list[float], seed: int = 0, b: int = 2000):
    rng = random.Random(seed)
    means = sorted(
        statistics.fmean(rng.choices(values, k=len(values))) for _ in range(b)
    )
    return statistics.fmean(values), means[int(0.025 * b)], means[int(0.975 * b) - 1]


def _grid(text: str) -> list[tuple[float, float]]:
    try:
        pairs = [tuple(float(x) for x in item.split(":")) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not T:top_p,...: {text!r}") from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"not T:top_p,...: {text!r}")
    return [(t, p) for t, p in pairs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HH)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--grid",
        type=_grid,
        default=GRID,
        help='settings to compare, "T:top_p,T:top_p" (default: the whole grid)',
    )
    args = ap.parse_args(argv)

    from training.bon_stats import distinct_n
    from training.sampling import TransformersSampler

    items = load(args.data, args.prompts, args.seed)
    sampler = TransformersSampler.from_ref(POLICY, device="cpu")
    model, tok = sampler.model, sampler.tokenizer
    started = time.perf_counter()
    ref = nll_per_token(model, tok, items, args.max_new_tokens)
    relevance = Relevance()
    ref_rel = relevance(
        [
            (
                c,
                tok.decode(
                    tok(t, add_special_tokens=False)["input_ids"][: args.max_new_tokens]
                ),
            )
            for c, t in items
        ]
    )
    rows: list[dict[str, Any]] = []
    for temperature, top_p in args.grid:
        t0 = time.perf_counter()
        samples = sampler.sample(
            [c for c, _ in items],
            args.n,
            max_new_tokens=args.max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=args.seed,
        )
        flat = [(c, s) for (c, _), row in zip(items, samples, strict=True) for s in row]
        nll = nll_per_token(model, tok, [(c, s.text) for c, s in flat], 10**9)
        # Per prompt: mean sample NLL minus the reference's (prompts with both).
        gaps = []
        for i, row in enumerate(samples):
            mine = [nll[i * args.n + j] for j in range(len(row))]
            mine = [x for x in mine if x is not None]
            if mine and ref[i] is not None:
                gaps.append(statistics.fmean(mine) - ref[i])
        gap, low, high = bootstrap_mean(gaps, seed=args.seed)
        rel = relevance([(c, s.text) for c, s in flat])
        per_prompt_rel = [
            statistics.fmean(rel[i * args.n : i * args.n + len(row)])
            for i, row in enumerate(samples)
        ]
        rel_mean, rel_low, rel_high = bootstrap_mean(per_prompt_rel, seed=args.seed)
        texts = [[s.text for s in row] for row in samples]
        d2 = [d for d in (distinct_n(t, 2) for t in texts) if d is not None]
        every = [s for row in samples for s in row]
        rows.append(
            {
                "temperature": temperature,
                "top_p": top_p,
                "sample_nll": statistics.fmean(x for x in nll if x is not None),
                "nll_gap": gap,
                "nll_gap_ci95": [low, high],
                "relevance": rel_mean,
                "relevance_ci95": [rel_low, rel_high],
                "distinct_2": statistics.fmean(d2) if d2 else None,
                "all_identical": sum(len(set(t)) == 1 for t in texts) / len(texts),
                "repeats_4gram": sum(repeats(s.text) for s in every) / len(every),
                "truncated": sum(s.finish_reason == "length" for s in every)
                / len(every),
                "empty": sum(not s.text.strip() for s in every) / len(every),
                "seconds": time.perf_counter() - t0,
            }
        )
        r = rows[-1]
        print(
            f"T={temperature:<4} top_p={top_p:<5} relevance {rel_mean:.3f} "
            f"[{rel_low:.3f}, {rel_high:.3f}]  NLL {r['sample_nll']:.2f} "
            f"gap {gap:+.2f} [{low:+.2f}, {high:+.2f}]  distinct-2 "
            f"{r['distinct_2']:.3f}  repeats {r['repeats_4gram']:.2f}  truncated "
            f"{r['truncated']:.2f}  empty {r['empty']:.2f}  ({r['seconds']:.0f} s)",
            flush=True,
        )
    best_d2 = max(r["distinct_2"] or 0.0 for r in rows)
    ok = [
        r
        for r in rows
        if (r["distinct_2"] or 0.0) >= 0.9 * best_d2 and r["repeats_4gram"] <= 0.10
    ] or rows
    pick = max(ok, key=lambda r: r["relevance"])
    reference = [x for x in ref if x is not None]
    print(
        f"reference answers: relevance {statistics.fmean(ref_rel):.3f}, NLL "
        f"{statistics.fmean(reference):.2f} over {len(reference)}; recommended: temperature {pick['temperature']}, top_p "
        f"{pick['top_p']} ({time.perf_counter() - started:.0f} s in all)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "reference_nll": statistics.fmean(reference),
                    "reference_relevance": statistics.fmean(ref_rel),
                    "rows": rows,
                    "recommended": {k: pick[k] for k in ("temperature", "top_p")},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
