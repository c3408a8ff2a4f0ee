"""Batched reward scoring of (conversation, response) items."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.data import Formatter, Message
from training.reward_model import RewardModel, load_reward_model, read_meta
from training.rm_data import _pad, _pad_id

Loaded = tuple[RewardModel, Any]


def _max_length(model_dir: Path | None, default: int = 512) -> int:
    if model_dir is None:
        return default
    return int(read_meta(model_dir).get("config", {}).get("max_length", default))


@torch.no_grad()
def score(
    model: str | os.PathLike[str] | Loaded,
    items: Sequence[tuple[Sequence[Message], str]],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | None = None,
    per_head: list | None = None,
) -> list[float]:
    """Rewards for ``items`` in input order.

    ``model`` is a version directory or a loaded ``(model, tokenizer)``. Items are
    scored in length-sorted batches so padding stays small; ``max_length`` defaults
    to the one the model was trained with. ``per_head``: a list that receives,
    in input order, each item's rewards by ensemble head (one forward pass; the
    returned reward is their mean, as without it).
    """
    model_dir = None
    if isinstance(model, str | os.PathLike):
        model_dir = Path(model)
        model = load_reward_model(model_dir, device=device)
    rm, tokenizer = model
    if device is not None:
        rm.to(device)
    rm.eval()
    dev = next(rm.parameters()).device
    formatter = Formatter(
        tokenizer, max_length or _max_length(model_dir), rm.is_encoder
    )
    encoded = [formatter.encode_item(conv, resp) for conv, resp in items]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = [0.0] * len(encoded)
    heads: list[list[float]] = [[] for _ in encoded]
    pad_id = _pad_id(tokenizer)
    autocast = dev.type == "cuda"
    was = rm.per_head
    rm.per_head = per_head is not None
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = _pad([encoded[i] for i in idx], pad_id)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                rewards = rm(ids.to(dev), mask.to(dev)).float().cpu()
            if rewards.ndim == 2:  # [batch, heads]
                for i, row in zip(idx, rewards.tolist(), strict=True):
                    heads[i] = row
                rewards = rewards.mean(-1)
            else:
                for i, r in zip(idx, rewards.tolist(), strict=True):
                    heads[i] = [r]
            for i, r in zip(idx, rewards.tolist(), strict=True):
                out[i] = r
    finally:
        rm.per_head = was
    if per_head is not None:
        per_head.extend(heads)
    return out


class RewardScorer:
    """Load a reward-model version once; score batches of responses.

    >>> scorer = RewardScorer("var/artifacts/rm/v3")
    >>> scorer([[{"role": "user", "content": "hi"}]], ["hello!"])
    [0.42]
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.model_dir = Path(model_dir)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_reward_model(self.model_dir, device=device)
        self.meta = read_meta(self.model_dir)
        self.max_length = _max_length(self.model_dir)
        self.batch_size = batch_size
        self.device = device
        # (conversation, response) -> rewards by ensemble head, for every item
        # scored since the last clear (rounds read it for the heads' verdicts).
        self.head_rewards: dict[tuple[str, str], list[float]] = {}

    @staticmethod
    def key(conversation: Sequence[Message], response: str) -> tuple[str, str]:
        return json.dumps(list(conversation), sort_keys=True), response

    def __call__(
        self, conversations: Sequence[Sequence[Message]], responses: Sequence[str]
    ) -> list[float]:
        if len(conversations) != len(responses):
            raise ValueError(
                f"{len(conversations)} conversations but {len(responses)} responses"
            )
        heads: list[list[float]] = []
        items = list(zip(conversations, responses, strict=True))
        out = score(
            (self.model, self.tokenizer),
            items,
            batch_size=self.batch_size,
            max_length=self.max_length,
            per_head=heads,
        )
        for (conv, resp), row in zip(items, heads, strict=True):
            self.head_rewards[self.key(conv, resp)] = row
        return out
