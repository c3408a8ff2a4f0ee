"""Length control (issue 17): a length covariate fitted with the Bradley-Terry
loss and dropped at scoring time removes a planted length effect from the reward
while keeping a planted quality signal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from training.losses import length_feature, preference_loss
from training.train_rm import train

from .conftest import save_tiny_base, synthetic_pairs
from .test_train_rm import tiny_config

QUALITY, LENGTH = 2.0, 3.0  # planted effects (logits)


def planted(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Pairs of replies with a quality q and a length; the label follows
    sigmoid(QUALITY·(q_a − q_b) + LENGTH·normalised length difference)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 2, generator=g)
    length = torch.randint(10, 1000, (n, 2), generator=g).float()
    logit = QUALITY * (q[:, 0] - q[:, 1]) + LENGTH * length_feature(
        length[:, 0], length[:, 1]
    )
    p_a = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    # The reward sees both: quality and a (linear, un-normalised) length feature.
    feats = torch.stack([q, length / 1000], dim=-1)  # [n, 2 replies, 2 features]
    return feats, length, p_a


def fit_linear(length_control: bool) -> tuple[torch.Tensor, float]:
    feats, length, p_a = planted(6000, seed=0)
    w = torch.zeros(2, requires_grad=True)
    beta = torch.zeros((), requires_grad=True)
    params = [w, beta] if length_control else [w]
    opt = torch.optim.Adam(params, lr=0.05)
    lf = length_feature(length[:, 0], length[:, 1])
    for _ in range(600):
        r = feats @ w  # [n, 2]
        loss = preference_loss(
            r[:, 0], r[:, 1], p_a, offset=beta * lf if length_control else None
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), float(beta.detach())


def pick_longer(w: torch.Tensor) -> float:
    feats, length, _ = planted(4000, seed=1)
    r = feats @ w  # scoring: the reward alone, β dropped
    picks_a = r[:, 0] > r[:, 1]
    return float(((length[:, 0] > length[:, 1]) == picks_a).float().mean())


def test_length_control_removes_a_planted_length_effect() -> None:
    w_plain, _ = fit_linear(length_control=False)
    w_ctrl, beta = fit_linear(length_control=True)
    # Without control the reward learns to pay for length...
    assert w_plain[1] > 1.0
    # ...with it the covariate takes the length effect and the reward does not.
    assert abs(float(w_ctrl[1])) < 0.3 * float(w_plain[1])
    assert abs(float(w_ctrl[1])) < 0.5
    assert beta == pytest.approx(LENGTH, abs=0.6)
    # The quality signal is kept in both.
    assert float(w_ctrl[0]) == pytest.approx(QUALITY, abs=0.3)
    # Scored without β, the controlled reward picks the longer reply about as
    # often as chance (quality is independent of length here), the plain one far
    # more often.
    assert pick_longer(w_plain) > 0.6
    assert abs(pick_longer(w_ctrl) - 0.5) < 0.05


def test_loss_offset_and_heads_broadcast() -> None:
    r_a = torch.tensor([[1.0, 2.0], [0.0, -1.0]])  # 2 pairs, 2 heads
    r_b = torch.zeros(2, 2)
    p_a = torch.tensor([1.0, 0.0])
    off = torch.tensor([0.5, -0.5])
    per_head = [
        preference_loss(r_a[:, k], r_b[:, k], p_a, offset=off) for k in range(2)
    ]
    both = preference_loss(r_a, r_b, p_a, offset=off)
    assert both == pytest.approx(sum(per_head) / 2)
    assert length_feature(torch.tensor([0.0]), torch.tensor([0.0])) == 0


def test_train_fits_beta_only_with_length_control(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", "encoder")
    # The longer reply wins: pad the preferred reply with filler.
    pairs = [
        dataclasses.replace(p, response_a=p.response_a + " x" * 30)
        if p.p_a == 1.0
        else dataclasses.replace(p, response_b=p.response_b + " x" * 30)
        for p in synthetic_pairs(64, seed=4)
    ]
    config = tiny_config(base, num_epochs=1, max_length=96, validations=1)
    plain = train(pairs, config)
    assert plain.metrics["train"]["length_beta"] is None
    ctrl = train(pairs, dataclasses.replace(config, length_control=True))
    assert ctrl.metrics["train"]["length_beta"] > 0.02  # 4 steps of Adam at 0.02
