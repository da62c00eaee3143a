"""Losses with known answers: truncated l1, center loss and update, ranked list loss."""

from __future__ import annotations

import math

import pytest
import torch

from adlib.nn.losses import center_loss, ranked_list_loss, truncated_l1_loss, update_centers


def test_center_loss_two_points() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    centers = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # both points at squared distance 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    ce = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert center_loss(x, logits, labels, centers, alpha=0.5).item() == pytest.approx(0.5 * 1 + 0.5 * ce)
    assert center_loss(x, logits, labels, centers, alpha=1.0).item() == pytest.approx(1.0)
    assert center_loss(x, logits, labels, centers, alpha=0.0).item() == pytest.approx(ce)


def test_center_loss_by_hand_with_shuffled_labels() -> None:
    # labels are not 0..B-1 in order, differences are negative and not 1: ||x_i - c_{y_i}||^2 = 4 + 1, 9
    x = torch.tensor([[-1.0, 1.0], [3.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([1, 0, 1])
    centers = torch.tensor([[0.0, 0.0], [1.0, 2.0]])  # c_0, c_1
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # CE = log 2
    center = (5 + 9 + 5) / 3
    assert center_loss(x, logits, labels, centers, alpha=1.0).item() == pytest.approx(center)
    assert center_loss(x, logits, labels, centers, alpha=0.2).item() == pytest.approx(0.2 * center + 0.8 * math.log(2))
    # the default alpha is 0.5 (our choice: the paper gives none)
    assert center_loss(x, logits, labels, centers).item() == pytest.approx(0.5 * center + 0.5 * math.log(2))


def test_center_update_wen() -> None:
    centers = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    x = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    labels = torch.tensor([0, 0])
    # delta_0 = (2 * c_0 - (x_1 + x_2)) / (1 + 2) = [-2, 0];  c_0 <- c_0 - 0.5 * delta_0 = [1, 0]
    new = update_centers(centers, x, labels, rate=0.5)
    torch.testing.assert_close(new, torch.tensor([[1.0, 0.0], [10.0, 10.0]]))
    assert centers[0, 0] == 0  # pure function


def test_ranked_list_loss_zero_when_all_pairs_trivial() -> None:
    # positives 2 sin(0.1) = 0.2 apart (< alpha - m = 0.8), negatives ~2 apart (> alpha = 1.2)
    x = _on_circle(0.0, 0.2, math.pi, math.pi + 0.2)
    labels = torch.tensor([0, 0, 1, 1])
    assert ranked_list_loss(x, labels, 1.2, 0.4, 10.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_ranked_list_loss_positive_pairs() -> None:
    # class-0 points at 0 and pi/2: d = sqrt(2) > 0.8, each anchor pays sqrt(2) - 0.8;
    # the class-1 anchor at pi has no positive and negatives at 2 and sqrt(2) > 1.2 (trivial).
    x = _on_circle(0.0, math.pi / 2, math.pi)
    labels = torch.tensor([0, 0, 1])
    expect = 2 * (math.sqrt(2) - 0.8) / 3
    assert ranked_list_loss(x, labels).item() == pytest.approx(expect, rel=1e-5)


def test_ranked_list_loss_negative_pairs() -> None:
    # one negative pair at d = 0.5 < 1.2: each anchor pays (1.2 - 0.5), whatever the weight
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    assert ranked_list_loss(x, torch.tensor([0, 1])).item() == pytest.approx(0.7, rel=1e-5)
    # two negatives of anchor 0 at d = 0.2 and 1.0, weights exp(T (1.2 - d)):
    x = torch.tensor([[0.0, 0.0], [0.2, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    t, lam = 2.0, 0.5
    w1, w2 = math.exp(t * 1.0), math.exp(t * 0.2)
    anchor0 = lam * (w1 * 1.0 + w2 * 0.2) / (w1 + w2)
    anchor1 = (0.8 - 0.4) * 1 + lam * 1.0  # positive at d = 0.8 > alpha - m = 0.4 (m = 0.8)
    anchor2 = (0.8 - 0.4) * 1 + lam * 0.2
    got = ranked_list_loss(x, labels, boundary=1.2, margin=0.8, temperature=t, lam=lam).item()
    assert got == pytest.approx((anchor0 + anchor1 + anchor2) / 3, rel=1e-5)


def test_ranked_list_loss_boundaries_are_strict_and_positives_averaged() -> None:
    # alpha = 1, m = 0.5: on the x-axis, a = 0, b = 0.5, c = 0.9 (class 0) and n = 2 (class 1).
    # a: positives b at 0.5 (= alpha - m: trivial, not counted) and c at 0.9 -> L_P = 0.9 - 0.5;
    #    negative n at 2 > alpha: trivial.
    # b: positives a (trivial), c at 0.4 (trivial); negative n at 1.5: trivial -> 0.
    # c: positives a at 0.9 and b at 0.4 (trivial) -> 0.4; negative n at 1.1: trivial -> 0.4.
    # n: no positive; negatives c at 1.1, b at 1.5, a at 2: all >= alpha -> 0.
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.9, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    got = ranked_list_loss(x, labels, boundary=1.0, margin=0.5).item()
    assert got == pytest.approx((0.4 + 0.0 + 0.4 + 0.0) / 4, rel=1e-5)
    # two positives beyond alpha - m are averaged: anchor a with b' at 0.7 and c at 0.9 pays (0.2 + 0.4) / 2
    x = torch.tensor([[0.0, 0.0], [0.7, 0.0], [0.9, 0.0]])
    got = ranked_list_loss(x, torch.tensor([0, 0, 0]), boundary=1.0, margin=0.5).item()
    assert got == pytest.approx(((0.2 + 0.4) / 2 + 0.2 + 0.4) / 3, rel=1e-5)
    # a negative exactly at alpha is trivial: its weight exp(T * 0) = 1 does not enter the mean
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    # a: negatives b at 0.5 (non-trivial), c at 1.0 (trivial) -> 0.5; b: positive c at 0.5 (trivial),
    # negative a at 0.5 -> 0.5; c: positive b (trivial), negative a at 1.0 (trivial) -> 0.
    got = ranked_list_loss(x, labels, boundary=1.0, margin=0.5, temperature=1.0).item()
    assert got == pytest.approx((0.5 + 0.5 + 0.0) / 3, rel=1e-5)


def test_ranked_list_loss_defaults() -> None:
    # defaults alpha = 1.2, m = 0.4, T = 10, lambda = 1: anchor 0 has two negatives, at 0.2 and 1.0
    x = torch.tensor([[0.0, 0.0], [0.2, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    w1, w2 = math.exp(10 * 1.0), math.exp(10 * 0.2)
    anchor0 = (w1 * 1.0 + w2 * 0.2) / (w1 + w2)
    anchor1 = 1.0  # positive at d = 0.8 = alpha - m pays 0; negative at 0.2
    anchor2 = 0.2  # positive at d = 0.8 pays 0; negative at 1.0
    assert ranked_list_loss(x, labels).item() == pytest.approx((anchor0 + anchor1 + anchor2) / 3, rel=1e-5)


def test_truncated_l1_loss_by_hand() -> None:
    # relu(0.5 - D(q)): D(q) = [1.0, 0.2, -1.0] -> [0, 0.3, 1.5], mean 0.6
    # relu(0.5 + D(q-)): D(q-) = [-1.0, 0.0] -> [0, 0.5], mean 0.25
    d_true = torch.tensor([1.0, 0.2, -1.0])
    d_fake = torch.tensor([-1.0, 0.0])
    assert torch.isclose(truncated_l1_loss(d_true, d_fake, 0.5), torch.tensor(0.85))
    # zero once normal >= th+ and fake <= -th-
    assert truncated_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([-0.5, -2.0])) == 0
    # another margin
    assert torch.isclose(truncated_l1_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0), torch.tensor(2.0))


def _on_circle(*angles: float) -> torch.Tensor:
    a = torch.tensor(angles)
    return torch.stack([a.cos(), a.sin()], dim=1)  # unit vectors [B, 2]
