"""Reward-model training data: encoded pairs, the deterministic held-out split,
the data fingerprint, length-grouped batches and padding."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from training.data import Formatter, Pair


@dataclass
class EncodedPair:
    prefix: list[int]
    a: list[int]
    b: list[int]
    p_a: float
    strength: int  # 0 = unknown
    # Characters of the two replies as written (before tokenising or truncation):
    # what eval-rm's length diagnostics and the length covariate measure.
    len_a: int = 0
    len_b: int = 0
    id: str = ""

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
        out.append(
            EncodedPair(
                prefix,
                a,
                b,
                pair.p_a,
                pair.strength or 0,
                len(pair.response_a),
                len(pair.response_b),
                pair.id,
            )
        )
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


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
