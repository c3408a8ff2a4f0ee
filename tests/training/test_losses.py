import math

import pytest
import torch

from training.losses import preference_loss


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def test_p1_equals_standard_pairwise_loss() -> None:
    ra, rb = t(1.5, -0.3, 2.0), t(0.5, 0.7, -1.0)
    got = preference_loss(ra, rb, t(1, 1, 1))
    want = -torch.nn.functional.logsigmoid(ra - rb).mean()
    assert torch.allclose(got, want)
    # hand value for one pair: d = 1 → log(1 + e^-1)
    one = preference_loss(t(1.0), t(0.0), t(1.0))
    assert one.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_p_half_is_symmetric_and_hand_computed() -> None:
    d = 2.0
    got = preference_loss(t(d), t(0.0), t(0.5)).item()
    want = 0.5 * math.log(1 + math.exp(-d)) + 0.5 * math.log(1 + math.exp(d))
    assert got == pytest.approx(want, rel=1e-6)
    swapped = preference_loss(t(0.0), t(d), t(0.5)).item()
    assert swapped == pytest.approx(got, rel=1e-6)


def test_p0_prefers_b() -> None:
    got = preference_loss(t(0.0), t(1.0), t(0.0)).item()
    assert got == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_margin_toward_preferred_side() -> None:
    margins = (0.0, 1 / 3, 2 / 3, 1.0)
    # p = 1, strength 4 (margin 1): −log σ(r_a − r_b − 1) with d = 1.5
    got = preference_loss(
        t(1.5), t(0.0), t(1.0), strength=torch.tensor([4]), margins=margins
    ).item()
    assert got == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    # p = 0: margin pushes toward B: −log σ(r_b − r_a − 2/3)
    got = preference_loss(
        t(0.0), t(1.5), t(0.0), strength=torch.tensor([3]), margins=margins
    ).item()
    assert got == pytest.approx(math.log(1 + math.exp(-(1.5 - 2 / 3))), rel=1e-6)
    # tie and missing strength: no margin
    base = preference_loss(t(1.0), t(0.0), t(0.5)).item()
    tie = preference_loss(
        t(1.0), t(0.0), t(0.5), strength=torch.tensor([4]), margins=margins
    ).item()
    assert tie == pytest.approx(base)
    none = preference_loss(
        t(1.0), t(0.0), t(1.0), strength=torch.tensor([0]), margins=margins
    ).item()
    assert none == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_centring_term() -> None:
    ra, rb, p = t(1.0, 2.0), t(0.5, 1.0), t(1.0, 1.0)
    base = preference_loss(ra, rb, p)
    got = preference_loss(ra, rb, p, center_coef=0.01)
    extra = 0.01 * ((1.5**2) + (3.0**2)) / 2
    assert (got - base).item() == pytest.approx(extra, rel=1e-5)


def test_large_differences_stay_finite() -> None:
    got = preference_loss(t(-200.0), t(200.0), t(1.0))
    assert torch.isfinite(got) and got.item() == pytest.approx(400.0)
