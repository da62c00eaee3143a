"""Gating: top-k weights and the eq. (4) mixture."""

from __future__ import annotations

import pytest
import torch

from adlib.nn.gating import aggregate_topk, topk_weights


def test_topk_by_hand() -> None:
    w = torch.tensor([[0.5, 0.3, 0.2]])
    s = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)  # expert i scores i + 1 everywhere
    torch.testing.assert_close(topk_weights(w, 2), torch.tensor([[0.625, 0.375, 0.0]]))
    assert aggregate_topk(s, w, 1).item() == pytest.approx(1.0)
    assert aggregate_topk(s, w, 2).item() == pytest.approx((0.5 * 1 + 0.3 * 2) / 0.8)
    assert aggregate_topk(s, w, 3).item() == pytest.approx(0.5 * 1 + 0.3 * 2 + 0.2 * 3)
    assert aggregate_topk(s, w, 10).item() == pytest.approx(1.7)  # k > K means all experts


def test_topk_limits() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 4, 3, 3, generator=g)  # [N, K, h, w]
    w = torch.softmax(torch.randn(5, 4, generator=g), dim=1)  # [N, K]
    best = w.argmax(dim=1)
    torch.testing.assert_close(aggregate_topk(s, w, 1), s[torch.arange(5), best])  # k = 1: argmax expert
    full = (w[:, :, None, None] * s).sum(1) / w.sum(1)[:, None, None]
    torch.testing.assert_close(aggregate_topk(s, w, 4), full)  # k = K: weighted mean
