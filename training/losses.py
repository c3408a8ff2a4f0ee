"""Pairwise reward-model losses (soft-label Bradley–Terry with optional extras)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def margin_for_strength(
    strength: torch.Tensor, margins: Sequence[float] | None
) -> torch.Tensor:
    """Per-pair margin from strength levels 1..4; 0 where strength is missing (<= 0)."""
    if margins is None:
        return torch.zeros_like(strength, dtype=torch.float32)
    table = torch.tensor([0.0, *margins], dtype=torch.float32, device=strength.device)
    index = strength.long().clamp(min=0, max=len(margins))
    return table[index]


def preference_loss(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    p_a: torch.Tensor,
    *,
    strength: torch.Tensor | None = None,
    margins: Sequence[float] | None = None,
    center_coef: float = 0.0,
    offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``−p·log σ(d − m) − (1 − p)·log σ(−(d − m)) + c·(r_a + r_b)²``.

    ``d = r_a − r_b`` (+ ``offset``, a per-pair covariate term such as the length
    control's ``β·Δlen`` — part of the fitted P(A ≻ B), not of the reward).
    ``r_a``/``r_b`` may be ``[B, K]`` (K ensemble heads): every head gets the
    same per-pair terms and the loss is the mean over pairs and heads. ``m`` is the strength margin pointed at the preferred side
    (``+m`` when p > ½, ``−m`` when p < ½, 0 for ties), so p = 1 reduces to Llama 2's
    ``−log σ(r_a − r_b − m)``. logsigmoid keeps large differences finite.
    """
    r_a = r_a.float()
    r_b = r_b.float()
    p_a = p_a.to(r_a)
    diff = r_a - r_b

    def per_pair(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) if diff.ndim == 2 else x

    if offset is not None:
        diff = diff + per_pair(offset.to(diff))
    sign = per_pair(torch.sign(p_a - 0.5))
    if strength is not None and margins is not None:
        margin = per_pair(margin_for_strength(strength, margins).to(diff))
        diff = diff - margin * sign
    p_a = per_pair(p_a)
    loss = -p_a * F.logsigmoid(diff) - (1.0 - p_a) * F.logsigmoid(-diff)
    if center_coef:
        loss = loss + center_coef * (r_a + r_b) ** 2
    return loss.mean()


def length_feature(len_a: torch.Tensor, len_b: torch.Tensor) -> torch.Tensor:
    """Normalised length difference ``(len_a − len_b) / (len_a + len_b)`` ∈ [−1, 1].

    The length control's covariate (LMArena's style control normalises the same
    way): scale-free, so a pair of long replies is not weighted over a pair of
    short ones, and 0 for two empty replies."""
    a, b = len_a.float(), len_b.float()
    return (a - b) / (a + b).clamp(min=1.0)
