"""Routing network: eq. (1), eq. (2), the Wen et al. centre update, ranked list loss, routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adlib.routing import (
    RouterConfig,
    RoutingNetwork,
    center_loss,
    ranked_list_loss,
    route,
    routing_accuracy,
    routing_loss,
    train_router,
    update_centers,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_embedding_is_eq1() -> None:
    g = torch.Generator().manual_seed(0)
    net = RoutingNetwork(4, 5, 3, norm=False)
    net.reset_parameters(g)
    feats = torch.randn(2, 4, 6, 7, generator=g)  # [N, C, h, w]
    expect = F.relu(F.conv2d(feats, net.proj.weight, net.proj.bias, padding=1)).mean(dim=(2, 3))
    torch.testing.assert_close(net.embed(feats), expect)
    net.norm = True
    torch.testing.assert_close(net.embed(feats), expect / expect.norm(dim=1, keepdim=True))
    x, logits = net(feats)
    assert x.shape == (2, 5) and logits.shape == (2, 3)
    torch.testing.assert_close(logits, x @ net.classifier.weight.T)


def test_center_loss_two_points() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    centers = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # both points at squared distance 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    ce = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert center_loss(x, logits, labels, centers, alpha=0.5).item() == pytest.approx(0.5 * 1 + 0.5 * ce)
    assert center_loss(x, logits, labels, centers, alpha=1.0).item() == pytest.approx(1.0)
    assert center_loss(x, logits, labels, centers, alpha=0.0).item() == pytest.approx(ce)


def test_center_update_wen() -> None:
    centers = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    x = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    labels = torch.tensor([0, 0])
    # delta_0 = (2 * c_0 - (x_1 + x_2)) / (1 + 2) = [-2, 0];  c_0 <- c_0 - 0.5 * delta_0 = [1, 0]
    new = update_centers(centers, x, labels, rate=0.5)
    torch.testing.assert_close(new, torch.tensor([[1.0, 0.0], [10.0, 10.0]]))
    assert centers[0, 0] == 0  # pure function


def _on_circle(*angles: float) -> torch.Tensor:
    a = torch.tensor(angles)
    return torch.stack([a.cos(), a.sin()], dim=1)  # unit vectors [B, 2]


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


def test_loss_switch() -> None:
    g = torch.Generator().manual_seed(0)
    net = RoutingNetwork(3, 4, 2)
    net.reset_parameters(g)
    x, logits = net(torch.randn(6, 3, 4, 4, generator=g))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(routing_loss(net, x, logits, labels, RouterConfig(loss="softmax")), ce)
    assert routing_loss(net, x, logits, labels, RouterConfig(loss="ranked_list")).item() >= 0
    with pytest.raises(ValueError):
        routing_loss(net, x, logits, labels, RouterConfig(loss="triplet"))


def test_routing_weights_are_softmax_of_cosine() -> None:
    net = RoutingNetwork(2, 2, 2)
    net.centers.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    w = net.route_embeddings(torch.tensor([[3.0, 0.0]]))  # cos = [1, 0]
    e = math.e
    torch.testing.assert_close(w, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))
    w_sharp = net.route_embeddings(torch.tensor([[3.0, 0.0]]), temperature=0.1)
    assert w_sharp[0, 0] > w[0, 0]
    assert routing_accuracy(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 1, 1]) == pytest.approx(2 / 3)


def _striped_maps(n: int, g: torch.Generator, noise: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 subclasses with the same channel means, told apart only by spatial pattern."""
    y = torch.arange(n) % 3
    i = torch.arange(6)
    patterns = torch.stack(
        [
            ((-1.0) ** i)[None, :].expand(6, 6),  # vertical stripes
            ((-1.0) ** i)[:, None].expand(6, 6),  # horizontal stripes
            ((-1.0) ** (i[:, None] + i[None, :])).float(),  # checkerboard
        ]
    )  # [3, 6, 6]
    x = patterns[y][:, None] + noise * torch.randn(n, 8, 6, 6, generator=g)  # [N, 8, 6, 6]
    return x, y


@pytest.mark.parametrize("loss", ["softmax", "center", "ranked_list"])
def test_router_learns_three_clusters(loss: str) -> None:
    g = torch.Generator().manual_seed(0)
    x_train, y_train = _striped_maps(60, g)
    x_test, y_test = _striped_maps(60, g)
    untrained = train_router(x_train, y_train, loss, steps=0, batch_size=16, seed=0)
    trained = train_router(x_train, y_train, loss, steps=120, batch_size=16, seed=0)
    assert routing_accuracy(route(untrained, x_test), y_test) < 0.9  # the task is not free
    w = route(trained, x_test)
    assert w.shape == (60, 3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(60))
    assert routing_accuracy(w, y_test) > 0.9


def test_router_is_deterministic() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = _striped_maps(12, g)
    a = route(train_router(x, y, "center", steps=6, batch_size=4, seed=5), x)
    b = route(train_router(x, y, "center", steps=6, batch_size=4, seed=5), x)
    torch.testing.assert_close(a, b)


def test_router_counts_steps() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = _striped_maps(10, g)
    r = train_router(x, y, "center", steps=7, batch_size=4, seed=0)  # reshuffles after 2 steps of 4 of 10 images
    assert r.loss_history.shape == (7,) and torch.isfinite(r.loss_history).all()
    assert train_router(x, y, "softmax", steps=0, seed=0).loss_history.shape == (0,)
