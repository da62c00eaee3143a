"""DVAD's conv MoE: dense per-position softmax gates, the weighted sum of experts, M = 1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adlib.nn.conv_moe import ConvMoE


def features(B=2, C=6, H=5, W=4) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("M", [1, 2, 4, 5, 8])
def test_gates_are_a_distribution_at_every_position(M) -> None:
    torch.manual_seed(0)
    moe = ConvMoE(6, experts=M).double()
    x = features()
    y = moe(x)
    assert y.shape == x.shape
    G = moe.last_gates
    assert G.shape == (2, M, 5, 4) and not G.requires_grad
    assert (G >= 0).all()
    torch.testing.assert_close(G.sum(dim=1), torch.ones(2, 5, 4, dtype=torch.float64))
    if M > 1:  # dense and input dependent: the weights vary over positions
        assert G.std(dim=(2, 3)).min() > 0


def test_against_the_formula() -> None:
    torch.manual_seed(0)
    moe = ConvMoE(6, experts=5).double()
    x = features()
    logits = F.conv2d(x, moe.gate.weight, moe.gate.bias)  # [B, M, H, W]
    G = logits.exp() / logits.exp().sum(1, keepdim=True)
    want = x.clone()
    for m, expert in enumerate(moe.experts):
        want += G[:, m : m + 1] * F.conv2d(x, expert.weight, expert.bias)  # G_m (.) expert_m(x)
    torch.testing.assert_close(moe(x), want)


def test_one_expert_is_a_1x1_conv_plus_the_input() -> None:
    moe = ConvMoE(6, experts=1).double()
    x = features()
    torch.testing.assert_close(moe(x), moe.experts[0](x) + x, rtol=0, atol=0)
    assert torch.equal(moe.last_gates, torch.ones(2, 1, 5, 4, dtype=torch.float64))


def test_known_answer_with_two_hand_set_experts() -> None:
    moe = ConvMoE(1, experts=2).double()
    with torch.no_grad():
        moe.experts[0].weight.fill_(2.0)  # expert 0: 2x
        moe.experts[0].bias.zero_()
        moe.experts[1].weight.zero_()  # expert 1: the constant 3
        moe.experts[1].bias.fill_(3.0)
        moe.gate.weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]]))  # logits (x, -x): G_0 = sigmoid(2x)
        moe.gate.bias.zero_()
    x = torch.tensor([[[[0.0, 1.0, -2.0]]]], dtype=torch.float64)
    g0 = torch.sigmoid(2 * x)
    torch.testing.assert_close(moe(x), g0 * 2 * x + (1 - g0) * 3 + x)


def test_wider_input_with_a_separate_residual() -> None:
    """DVAD mixes the concatenated [global, local, dynamic] features (3C) and adds the block input (C)."""
    moe = ConvMoE(18, 6, experts=5).double()
    mixed, skip = torch.randn(2, 18, 5, 4, dtype=torch.float64), features()
    out = moe(mixed, residual=skip)
    assert out.shape == skip.shape
    torch.testing.assert_close(out - skip, moe(mixed, residual=torch.zeros_like(skip)))


def test_defaults_and_init_scale() -> None:
    torch.manual_seed(0)
    moe = ConvMoE(64)
    assert len(moe.experts) == 5 and moe.gate.out_channels == 5  # DVAD's M = 5
    assert moe.last_gates is None  # nothing logged before the first forward
    w = torch.cat([e.weight.flatten() for e in moe.experts])  # 5 x 64 x 64 weights
    assert math.isclose(w.std().item(), math.sqrt(2 / 64), rel_tol=0.03)  # normal, std sqrt(2 / fan_out)
    assert abs(w.mean().item()) < 0.01 and all(torch.equal(e.bias, torch.zeros(64)) for e in moe.experts)


def test_a_zero_gate_init_starts_every_expert_at_one_over_m_and_the_release_init_near_one_hot() -> None:
    torch.manual_seed(0)
    x = features(C=48) * 3
    zero = ConvMoE(48, experts=5, gate_init="zero").double()
    zero(x)
    torch.testing.assert_close(zero.last_gates, torch.full_like(zero.last_gates, 0.2))
    assert zero.gate.weight.requires_grad  # it still learns
    release = ConvMoE(48, experts=5).double()
    release(x)
    assert release.last_gates.max(dim=1).values.mean() > 0.7  # saturated: one expert takes most of each position
    with pytest.raises(ValueError, match="gate_init"):
        ConvMoE(6, gate_init="ones")
