"""Pairs → reward-model version: ``train(pairs, config, progress=...)``.

Both responses of a pair go through one forward pass (encoders and the decoder
full path concatenate A and B rows into one batch; the decoder prefix path runs the
conversation once and reuses its KV cache for A and B). Batches are grouped by length
and padded dynamically. The checkpoint is written to a hidden temporary directory
next to ``out_dir`` and renamed into place, so a crash never leaves a half version.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training import distributed
from training.config import RewardConfig
from training.data import Formatter, Pair, TruncationStats
from training.losses import length_feature, preference_loss
from training.models import resolve_model_ref
from training.reward_model import (
    RewardModel,
    build_reward_model,
    load_reward_model,
    read_meta,
)
from training.rm_checkpoint import check_out_dir, library_versions, save_version
from training.rm_data import (
    _pad_id,
    data_fingerprint,
    encode_pairs,
    length_grouped_batches,
    split_train_eval,
)
from training.rm_eval import evaluate_encoded, pair_rewards

ProgressFn = Callable[[float, str], None]
# Adam step size of the length-control coefficient β (see train()).
LENGTH_BETA_LR = 0.02
# counter(phase, pairs done, pairs in the phase): train, eval, extra_eval.
CountFn = Callable[[str, int, int], None]


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


# ------------------------------------------------------------------------ training


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
    model = build_reward_model(
        base_dir,
        pooling=config.pooling,
        base_ref=config.base,
        heads=config.ensemble_heads,
    )
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
    validation_pairs: Sequence[Pair] | None = None,
) -> TrainResult:
    """Train a reward model on ``pairs``; save it to ``out_dir`` when given.

    ``eval_pairs`` is an extra evaluation set reported as ``metrics["extra_eval"]``;
    the held-out split (``config.eval_fraction``) is ``metrics["eval"]``, or
    ``validation_pairs`` when given (then every pair of ``pairs`` trains). The
    held-out pairs are validated ``config.validations`` times, evenly spaced; with
    ``config.select_best`` the weights of the pass with the lowest held-out log
    loss are kept (``metrics["validation"]`` lists every pass).
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
    world = distributed.current()  # World() unless started by torchrun
    device = distributed.device_for(world, config.device)
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

    if validation_pairs is not None:
        train_pairs, held_pairs = list(pairs), list(validation_pairs)
    else:
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
    forward = distributed.data_parallel(model, pair_rewards, world, device)
    if world.size > 1:
        report(0.0, f"data parallel: {world.as_dict(bs)}", force=True)
    # Length control: β of the covariate, fitted with the loss, never part of the
    # reward (scoring drops it). It is one scalar and starts at 0, so it gets its
    # own, much larger step size than the backbone's (at 3e-5 it would hardly move
    # in a run); the schedule scales it like the rest.
    beta = torch.zeros((), device=device, requires_grad=True)
    if config.length_control:
        optimizer.add_param_group(
            {"params": [beta], "lr": LENGTH_BETA_LR, "weight_decay": 0.0}
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    margins = config.margins if config.use_margins else None
    # Train and eval need ~5 % and ~2 % of the time each; eval gets the tail.
    train_share = 0.9
    history: list[dict[str, float]] = []
    model.train()
    model.per_head = True  # every head gets its own loss (losses broadcast)
    torch.manual_seed(config.seed)
    t_train = time.perf_counter()
    running = 0.0
    n_scheduled, n_done = sum(len(b) for b in schedule), 0
    # Validation after these micro-batches (the last one always): evenly spaced.
    n_val = max(1, config.validations)
    val_at = {math.ceil(total_micro * j / n_val) for j in range(1, n_val + 1)}
    validation: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    best_state: dict[str, torch.Tensor] | None = None
    val_runtime = 0.0

    def validate(micro_done: int) -> None:
        nonlocal best_state, val_runtime
        t_val = time.perf_counter()
        m = evaluate_encoded(
            model,
            held_enc,
            pad_id=pad_id,
            batch_size=config.eval_batch_size,
            prefix_reuse=prefix_reuse,
            device=device,
            autocast=autocast,
            world=world,
        )
        step = math.ceil(micro_done / accum)
        validation.append(
            {"step": step, "log_loss": m["log_loss"], "accuracy": m["accuracy"]}
        )
        if not best or m["log_loss"] < best["metrics"]["log_loss"]:
            best.update(step=step, metrics=m)
            if config.select_best and micro_done < total_micro:
                # A copy on the CPU: the live weights keep training.
                best_state = {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in model.state_dict().items()
                }
            else:
                best_state = None  # the final weights are the best ones
        val_runtime += time.perf_counter() - t_val

    for micro, idx in enumerate(schedule):
        # This rank's share of the global batch (all of it in one process); a
        # rank with no share still runs a pair at weight 0 to join the all-reduce.
        mine = distributed.shard(idx, world)
        weight = distributed.shard_weight(len(mine), len(idx), world)
        batch = [train_enc[i] for i in mine or idx[:1]]
        sync = (micro + 1) % accum == 0 or micro + 1 == total_micro
        with (
            forward.sync(sync),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast),
        ):
            r_a, r_b = forward.forward(batch, pad_id, device, prefix_reuse)
        loss = preference_loss(
            r_a,
            r_b,
            torch.tensor([e.p_a for e in batch], device=device),
            strength=torch.tensor([e.strength for e in batch], device=device),
            margins=margins,
            center_coef=config.center_rewards_coefficient,
            offset=(
                beta
                * length_feature(
                    torch.tensor([e.len_a for e in batch], device=device),
                    torch.tensor([e.len_b for e in batch], device=device),
                )
                if config.length_control
                else None
            ),
        )
        with forward.sync(sync):
            (loss * weight / accum).backward()
        running += loss.item() * weight / world.size
        if sync:
            if config.length_control and world.size > 1 and beta.grad is not None:
                # β lives outside the DDP module: average its gradient by hand.
                distributed.all_reduce_sum_(beta.grad, world).div_(world.size)
            running = distributed.sum_float(running, world, device)
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
        if held_enc and micro + 1 in val_at and micro + 1 < total_micro:
            validate(micro + 1)
    train_runtime = time.perf_counter() - t_train - val_runtime

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
            # The fitted length effect (logits per unit of normalised length
            # difference); None without length control.
            "length_beta": float(beta.detach()) if config.length_control else None,
        }
    }
    eval_progress = _Progress(
        lambda f, m: report(train_share + (1 - train_share) * f, m, force=True),
        config.progress_interval_s,
    )
    report(train_share, f"evaluating {len(held_enc)} held-out pairs", force=True)
    final_eval = evaluate_encoded(
        model,
        held_enc,
        pad_id=pad_id,
        batch_size=config.eval_batch_size,
        prefix_reuse=prefix_reuse,
        device=device,
        autocast=autocast,
        world=world,
        progress=eval_progress,
        counter=counter and (lambda d, t: counter("eval", d, t)),
    )
    if held_enc:
        validation.append(
            {
                "step": total_steps,
                "log_loss": final_eval["log_loss"],
                "accuracy": final_eval["accuracy"],
            }
        )
    if best_state is not None and final_eval["log_loss"] >= best["metrics"]["log_loss"]:
        model.load_state_dict(best_state)
        metrics["eval"] = best["metrics"]
        metrics["best_step"] = best["step"]
    else:
        metrics["eval"] = final_eval
        metrics["best_step"] = total_steps
    metrics["validation"] = validation
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
            world=world,
            progress=eval_progress,
            counter=counter and (lambda d, t: counter("extra_eval", d, t)),
        )
        metrics["extra_eval"]["truncation"] = formatter.stats.as_dict()
    model.eval()
    model.per_head = False
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
            "distributed": world.as_dict(bs),
            # The loss curve, thinned to at most ~2,000 points (a launched run's
            # caller reads it from here).
            "history": history[:: max(1, len(history) // 2000)],
        }
        if world.is_main:  # one writer; the others wait for the rename
            model.to("cpu")
            result.out_dir = save_version(model, tokenizer, out_dir, meta)
            model.to(device)
        distributed.barrier(world)
        result.out_dir = Path(out_dir)
    report(1.0, "done", force=True)
    return result
