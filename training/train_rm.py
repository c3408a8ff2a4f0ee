"""Pairs → reward-model version: ``train(pairs, config, progress=...)``.

Both responses of a pair go through one forward pass (encoders and the decoder
full path concatenate A and B rows into one batch; the decoder prefix path runs the
conversation once and reuses its KV cache for A and B). Batches are grouped by length
and padded dynamically. The checkpoint is written to a hidden temporary directory
next to ``out_dir`` and renamed into place, so a crash never leaves a half version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.config import RewardConfig
from training.data import Formatter, Pair, TruncationStats
from training.losses import preference_loss
from training.metrics import expected_calibration_error
from training.models import resolve_model_ref
from training.reward_model import (
    META_FILE,
    RewardModel,
    build_reward_model,
    load_reward_model,
    read_meta,
    save_weights,
    spec_dict,
)

ProgressFn = Callable[[float, str], None]
# counter(phase, pairs done, pairs in the phase): train, eval, extra_eval.
CountFn = Callable[[str, int, int], None]


@dataclass
class EncodedPair:
    prefix: list[int]
    a: list[int]
    b: list[int]
    p_a: float
    strength: int  # 0 = unknown

    @property
    def length(self) -> int:
        return 2 * len(self.prefix) + len(self.a) + len(self.b)

    def batch_key(self, prefix_reuse: bool) -> tuple[int, int]:
        """What padding depends on in a batch. With prefix reuse the prefix and the
        responses are padded separately (to the batch's longest prefix and longest
        response), so pairs are grouped by prefix length first: grouping by total
        length alone would put a long prompt with short replies next to a short
        prompt with long replies and pad both ways, undoing the saving."""
        if prefix_reuse:
            return len(self.prefix), max(len(self.a), len(self.b))
        return self.length, 0


@dataclass
class TrainResult:
    model: RewardModel
    tokenizer: Any
    metrics: dict[str, Any]
    out_dir: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)


class _Progress:
    """Rate-limits progress callbacks to one per ``interval`` seconds."""

    def __init__(self, fn: ProgressFn | None, interval: float) -> None:
        self.fn, self.interval, self.last = fn, interval, -math.inf

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.fn is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.fn(min(max(fraction, 0.0), 1.0), message)


# ------------------------------------------------------------------ data handling


def split_train_eval(
    pairs: Sequence[Pair], eval_fraction: float
) -> tuple[list[Pair], list[Pair]]:
    """Deterministic split by hashing pair ids (stable across runs and versions).

    With ``eval_fraction > 0`` and at least two pairs, neither side is left empty: a
    small project's first labels would otherwise often give no held-out pair (or no
    training pair) by chance. The pair with the lowest hash then goes to the
    held-out side, the one with the highest to training — still decided by id alone.
    """
    keyed = sorted(
        (int.from_bytes(hashlib.sha256(p.id.encode()).digest()[:8], "big"), i, p)
        for i, p in enumerate(pairs)
    )
    n_held = sum(1 for h, _, _ in keyed if h / 2**64 < eval_fraction)
    if eval_fraction > 0 and len(keyed) >= 2:
        n_held = min(max(n_held, 1), len(keyed) - 1)
    held_idx = {i for _, i, _ in keyed[:n_held]}
    train = [p for i, p in enumerate(pairs) if i not in held_idx]
    held = [p for i, p in enumerate(pairs) if i in held_idx]
    return train, held


def data_fingerprint(pairs: Sequence[Pair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        blob = [
            p.id,
            list(p.conversation),
            p.response_a,
            p.response_b,
            p.p_a,
            p.strength,
        ]
        h.update(json.dumps(blob, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()


def encode_pairs(formatter: Formatter, pairs: Sequence[Pair]) -> list[EncodedPair]:
    out = []
    for pair in pairs:
        prefix, a, b = formatter.encode_pair(pair)
        out.append(EncodedPair(prefix, a, b, pair.p_a, pair.strength or 0))
    return out


def length_grouped_batches(
    lengths: Sequence[Any], batch_size: int, rng: random.Random, group: bool = True
) -> list[list[int]]:
    """Shuffle, sort within mega-batches of 50 batches, then shuffle batch order.

    The same recipe as transformers' ``group_by_length``: similar lengths share a
    batch (little padding) while the order stays random across batches.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group:
        mega = batch_size * 50
        order = [
            i
            for start in range(0, len(order), mega)
            for i in sorted(
                order[start : start + mega], key=lambda j: lengths[j], reverse=True
            )
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def pair_rewards(
    model: RewardModel,
    batch: Sequence[EncodedPair],
    pad_id: int,
    device: torch.device,
    prefix_reuse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_a, r_b) for a batch of pairs, both responses in one forward pass."""
    if prefix_reuse and not model.is_encoder:
        prefix_ids, prefix_mask = _pad([e.prefix for e in batch], pad_id)
        suffixes = [s for e in batch for s in (e.a, e.b)]  # a0, b0, a1, b1, ...
        suffix_ids, suffix_mask = _pad(suffixes, pad_id)
        r = model.forward_prefix_shared(
            prefix_ids.to(device),
            prefix_mask.to(device),
            suffix_ids.to(device),
            suffix_mask.to(device),
        )
        return r[0::2], r[1::2]
    rows = [e.prefix + e.a for e in batch] + [e.prefix + e.b for e in batch]
    ids, mask = _pad(rows, pad_id)
    r = model(ids.to(device), mask.to(device))
    return r[: len(batch)], r[len(batch) :]


# ----------------------------------------------------------------------- metrics


def preference_metrics(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    p_a: torch.Tensor,
    strength: torch.Tensor,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Accuracy (overall and per strength), soft log loss, ECE, reward mean/std."""
    r_a, r_b, p_a = r_a.double(), r_b.double(), p_a.double()
    diff = r_a - r_b
    q = torch.sigmoid(diff)
    decided = p_a != 0.5
    # A reward tie counts as half right rather than silently as A or B.
    correct = torch.where(
        diff == 0, torch.full_like(diff, 0.5), ((diff > 0) == (p_a > 0.5)).double()
    )
    log_loss = -(p_a * torch.nn.functional.logsigmoid(diff)) - (
        1 - p_a
    ) * torch.nn.functional.logsigmoid(-diff)
    ece = expected_calibration_error(q.tolist(), p_a.tolist(), bins=n_bins)
    rewards = torch.cat([r_a, r_b])
    by_strength = {}
    for level in range(1, 5):
        sel = decided & (strength == level)
        if sel.any():
            by_strength[str(level)] = {
                "accuracy": correct[sel].mean().item(),
                "n": int(sel.sum()),
            }
    n = len(diff)
    return {
        "n": n,
        "n_decided": int(decided.sum()),
        "accuracy": correct[decided].mean().item() if decided.any() else None,
        "accuracy_by_strength": by_strength,
        "log_loss": log_loss.mean().item() if n else None,
        "ece": ece,
        "reward_mean": rewards.mean().item() if n else None,
        "reward_std": rewards.std().item() if n > 1 else None,
    }


@torch.no_grad()
def evaluate_encoded(
    model: RewardModel,
    encoded: Sequence[EncodedPair],
    *,
    pad_id: int,
    batch_size: int = 32,
    prefix_reuse: bool = True,
    device: torch.device | str | None = None,
    autocast: bool = False,
    progress: _Progress | None = None,
    counter: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    if not encoded:
        return preference_metrics(*(torch.zeros(0) for _ in range(4)))
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    reuse = prefix_reuse and not model.is_encoder
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].batch_key(reuse))
    ra = torch.zeros(len(encoded))
    rb = torch.zeros(len(encoded))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            a, b = pair_rewards(
                model, [encoded[i] for i in idx], pad_id, device, prefix_reuse
            )
        ra[idx], rb[idx] = a.float().cpu(), b.float().cpu()
        if progress is not None:
            progress(start / len(order), f"evaluating {start}/{len(order)} pairs")
        if counter is not None:
            counter(start + len(idx), len(order))
    model.train(was_training)
    p = torch.tensor([e.p_a for e in encoded])
    s = torch.tensor([e.strength for e in encoded])
    return preference_metrics(ra, rb, p, s)


def evaluate_pairs(
    model: RewardModel,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    max_length: int = 512,
    batch_size: int = 32,
    device: str | None = None,
    counter: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of a loaded reward model on pairs (used by ``eval-rm``);
    ``counter(pairs done, pairs)`` after each batch."""
    formatter = Formatter(tokenizer, max_length, model.is_encoder)
    encoded = encode_pairs(formatter, pairs)
    metrics = evaluate_encoded(
        model,
        encoded,
        pad_id=_pad_id(tokenizer),
        batch_size=batch_size,
        device=device,
        counter=counter,
    )
    metrics["truncation"] = formatter.stats.as_dict()
    return metrics


# --------------------------------------------------------------------- checkpoint


def library_versions() -> dict[str, str]:
    import safetensors
    import tokenizers
    import transformers

    import training

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "pairloop_training": training.__version__,
    }


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Fail before training if ``out_dir`` already holds something."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output directory {out} already exists and is not empty")
    return out


def save_version(
    model: RewardModel,
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any],
) -> Path:
    """Write a complete version directory atomically (temp dir + rename)."""
    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent → same filesystem → os.replace is an atomic rename. The leading
    # dot keeps a half-written directory out of version listings.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_weights(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        full_meta = {"reward_model": spec_dict(model.spec), **meta}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a dir
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------ training


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def prepare_model(
    config: RewardConfig, artifacts_dir: str | os.PathLike[str] | None = None
) -> tuple[RewardModel, Any, str]:
    """(model, tokenizer, base reference) from ``init_from`` or ``config.base``."""
    from transformers import AutoTokenizer

    if config.init_from:
        meta = read_meta(config.init_from)
        model, tokenizer = load_reward_model(config.init_from)
        return model, tokenizer, meta["reward_model"].get("base") or config.base
    base_dir = resolve_model_ref(config.base, artifacts_dir)
    torch.manual_seed(config.seed)  # the head init
    model = build_reward_model(base_dir, pooling=config.pooling, base_ref=config.base)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, config.base


def _optimizer(model: RewardModel, config: RewardConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates every tensor in one pass per step; the default
    # per-tensor loop on a CPU costs about twice as long (HF Trainer's default
    # optimiser is the fused one too).
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, fused=device in ("cpu", "cuda")
    )


def train(
    pairs: Sequence[Pair],
    config: RewardConfig,
    *,
    progress: ProgressFn | None = None,
    eval_pairs: Sequence[Pair] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    counter: CountFn | None = None,
) -> TrainResult:
    """Train a reward model on ``pairs``; save it to ``out_dir`` when given.

    ``eval_pairs`` is an extra evaluation set reported as ``metrics["extra_eval"]``;
    the held-out split (``config.eval_fraction``) is ``metrics["eval"]``.
    ``progress(fraction, message)`` is called at least every
    ``config.progress_interval_s`` seconds while work proceeds; ``counter`` (see
    :data:`CountFn`) after every batch, for progress bars in pairs.
    """
    report = _Progress(progress, config.progress_interval_s)
    if out_dir is not None:
        check_out_dir(out_dir)
    if not pairs:
        raise ValueError("no training pairs")
    report(0.0, "loading model", force=True)
    device = torch.device(
        config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    autocast = config.bf16 if config.bf16 is not None else device.type == "cuda"
    model, tokenizer, base_ref = prepare_model(config, artifacts_dir)
    model.to(device)
    if config.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if config.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    # The packed forward has no checkpointing of its own.
    model.padding_free = (
        model.padding_free and config.padding_free and not config.gradient_checkpointing
    )
    prefix_reuse = (
        config.prefix_reuse
        and not model.is_encoder
        and not config.gradient_checkpointing
    )
    pad_id = _pad_id(tokenizer)

    train_pairs, held_pairs = split_train_eval(pairs, config.eval_fraction)
    if not train_pairs:
        raise ValueError("eval_fraction left no training pairs")
    report(0.0, f"tokenising {len(pairs)} pairs", force=True)
    t0 = time.perf_counter()
    formatter = Formatter(tokenizer, config.max_length, model.is_encoder)
    train_enc = encode_pairs(formatter, train_pairs)
    train_trunc = formatter.stats
    formatter.stats = TruncationStats()
    held_enc = encode_pairs(formatter, held_pairs)
    held_trunc = formatter.stats
    tokenise_s = time.perf_counter() - t0

    rng = random.Random(config.seed)
    bs, accum = config.batch_size, config.gradient_accumulation_steps
    per_epoch = math.ceil(len(train_enc) / bs)
    total_micro = max(1, math.ceil(config.num_epochs * per_epoch))
    lengths = [e.batch_key(prefix_reuse) for e in train_enc]
    schedule: list[list[int]] = []
    while len(schedule) < total_micro:
        schedule += length_grouped_batches(lengths, bs, rng, config.group_by_length)
    schedule = schedule[:total_micro]
    total_steps = math.ceil(total_micro / accum)
    warmup = int(config.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    margins = config.margins if config.use_margins else None
    # Train and eval need ~5 % and ~2 % of the time each; eval gets the tail.
    train_share = 0.9
    history: list[dict[str, float]] = []
    model.train()
    torch.manual_seed(config.seed)
    t_train = time.perf_counter()
    running = 0.0
    n_scheduled, n_done = sum(len(b) for b in schedule), 0
    for micro, idx in enumerate(schedule):
        batch = [train_enc[i] for i in idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            r_a, r_b = pair_rewards(model, batch, pad_id, device, prefix_reuse)
        loss = preference_loss(
            r_a,
            r_b,
            torch.tensor([e.p_a for e in batch], device=device),
            strength=torch.tensor([e.strength for e in batch], device=device),
            margins=margins,
            center_coef=config.center_rewards_coefficient,
        )
        (loss / accum).backward()
        running += loss.item()
        if (micro + 1) % accum == 0 or micro + 1 == total_micro:
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step = (micro + 1 + accum - 1) // accum
            history.append({"step": step, "loss": running / accum})
            running = 0.0
        frac = (micro + 1) / total_micro
        n_done += len(idx)
        if counter is not None:
            counter("train", n_done, n_scheduled)
        report(
            train_share * frac,
            f"step {micro + 1}/{total_micro} loss {loss.item():.4f} "
            f"epoch {(micro + 1) / per_epoch:.2f}",
        )
    train_runtime = time.perf_counter() - t_train

    metrics: dict[str, Any] = {
        "train": {
            "pairs": len(train_enc),
            "pairs_seen": n_scheduled,
            "steps": total_steps,
            "runtime_s": train_runtime,
            "pairs_per_s": n_scheduled / train_runtime if train_runtime else None,
            "tokenise_s": tokenise_s,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": (
                sum(h["loss"] for h in history[-10:]) / len(history[-10:])
                if history
                else None
            ),
            "truncation": train_trunc.as_dict(),
            "prefix_reuse": prefix_reuse,
            "padding_free": model.padding_free,
        }
    }
    eval_progress = _Progress(
        lambda f, m: report(train_share + (1 - train_share) * f, m, force=True),
        config.progress_interval_s,
    )
    report(train_share, f"evaluating {len(held_enc)} held-out pairs", force=True)
    metrics["eval"] = evaluate_encoded(
        model,
        held_enc,
        pad_id=pad_id,
        batch_size=config.eval_batch_size,
        prefix_reuse=prefix_reuse,
        device=device,
        autocast=autocast,
        progress=eval_progress,
        counter=counter and (lambda d, t: counter("eval", d, t)),
    )
    metrics["eval"]["truncation"] = held_trunc.as_dict()
    if eval_pairs:
        formatter.stats = TruncationStats()
        extra_enc = encode_pairs(formatter, eval_pairs)
        metrics["extra_eval"] = evaluate_encoded(
            model,
            extra_enc,
            pad_id=pad_id,
            batch_size=config.eval_batch_size,
            prefix_reuse=prefix_reuse,
            device=device,
            autocast=autocast,
            progress=eval_progress,
            counter=counter and (lambda d, t: counter("extra_eval", d, t)),
        )
        metrics["extra_eval"]["truncation"] = formatter.stats.as_dict()
    model.eval()
    result = TrainResult(model, tokenizer, metrics, None, history)
    if out_dir is not None:
        report(0.99, f"saving to {out_dir}", force=True)
        meta = {
            "config": config.to_dict(),
            "base": base_ref,
            "parent": str(config.init_from) if config.init_from else None,
            "data_fingerprint": data_fingerprint(pairs),
            "n_pairs": len(pairs),
            "metrics": metrics,
            "versions": library_versions(),
            "created_unix": time.time(),
        }
        model.to("cpu")
        result.out_dir = save_version(model, tokenizer, out_dir, meta)
        model.to(device)
    report(1.0, "done", force=True)
    return result
