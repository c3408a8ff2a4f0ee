"""Scoring pairs with a reward model: rewards of a batch in one forward pass,
held-out metrics of encoded or raw pairs (with per-pair predictions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from training import distributed
from training.data import Formatter, Pair
from training.reward_model import (
    RewardModel,
)
from training.rm_data import EncodedPair, _pad, _pad_id, encode_pairs
from training.rm_metrics import pair_predictions, preference_metrics


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
    progress: Callable[..., None] | None = None,
    counter: Callable[[int, int], None] | None = None,
    predictions: list[dict[str, Any]] | None = None,
    world: distributed.World | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on encoded pairs; per-pair records are appended to
    ``predictions`` when a list is given. With a ``world`` of several ranks each
    scores its share and the rewards are summed across ranks, so every rank
    computes the metrics of all pairs."""
    world = world or distributed.World()
    if not encoded:
        return preference_metrics(*(torch.zeros(0) for _ in range(4)))
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    reuse = prefix_reuse and not model.is_encoder
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].batch_key(reuse))
    order = distributed.shard(order, world)
    heads = model.spec.heads
    ra = torch.zeros(len(encoded), heads)
    rb = torch.zeros(len(encoded), heads)
    was_per_head, model.per_head = model.per_head, True
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            a, b = pair_rewards(
                model, [encoded[i] for i in idx], pad_id, device, prefix_reuse
            )
        a, b = a.float().cpu(), b.float().cpu()
        ra[idx], rb[idx] = a.view(len(idx), heads), b.view(len(idx), heads)
        if progress is not None:
            progress(start / len(order), f"evaluating {start}/{len(order)} pairs")
        if counter is not None:
            counter(start + len(idx), len(order))
    model.train(was_training)
    model.per_head = was_per_head
    # Rows another rank scored are 0 here, so the sum assembles every reward.
    ra, rb = (distributed.summed(t, world, device) for t in (ra, rb))
    # The reward is the heads' mean; disagreement is the variance across heads of
    # the predicted difference r_a − r_b.
    diff_var = (ra - rb).var(-1, unbiased=False) if heads > 1 else None
    ra, rb = ra.mean(-1), rb.mean(-1)
    p = torch.tensor([e.p_a for e in encoded])
    s = torch.tensor([e.strength for e in encoded])
    if predictions is not None:
        predictions.extend(pair_predictions(encoded, ra, rb, diff_var))
    metrics = preference_metrics(
        ra,
        rb,
        p,
        s,
        len_a=[e.len_a for e in encoded],
        len_b=[e.len_b for e in encoded],
    )
    if diff_var is not None:
        metrics["heads"] = heads
        metrics["head_diff_var_mean"] = diff_var.mean().item()
    return metrics


def evaluate_pairs(
    model: RewardModel,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    max_length: int = 512,
    batch_size: int = 32,
    device: str | None = None,
    counter: Callable[[int, int], None] | None = None,
    predictions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Metrics of a loaded reward model on pairs (used by ``eval-rm``);
    ``counter(pairs done, pairs)`` after each batch; per-pair records go to
    ``predictions`` when a list is given."""
    formatter = Formatter(tokenizer, max_length, model.is_encoder)
    encoded = encode_pairs(formatter, pairs)
    metrics = evaluate_encoded(
        model,
        encoded,
        pad_id=_pad_id(tokenizer),
        batch_size=batch_size,
        device=device,
        counter=counter,
        predictions=predictions,
    )
    metrics["truncation"] = formatter.stats.as_dict()
    return metrics
