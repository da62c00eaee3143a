"""Routing network: eq. (1), eq. (2), the Wen et al. centre update, ranked list loss, routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adlib.methods.base import TrainBudget
from adlib.methods.routing import (
    RouterConfig,
    RoutingNetwork,
    route,
    routing_accuracy,
    routing_loss,
    train_router,
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
    untrained = train_router(
        x_train, y_train, RouterConfig(loss=loss), TrainBudget(router_steps=0, router_batch=16, seed=0)
    )
    trained = train_router(
        x_train, y_train, RouterConfig(loss=loss), TrainBudget(router_steps=120, router_batch=16, seed=0)
    )
    assert routing_accuracy(route(untrained, x_test), y_test) < 0.9  # the task is not free
    w = route(trained, x_test)
    assert w.shape == (60, 3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(60))
    assert routing_accuracy(w, y_test) > 0.9


def test_router_is_deterministic() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = _striped_maps(12, g)
    a = route(train_router(x, y, RouterConfig(loss="center"), TrainBudget(router_steps=6, router_batch=4, seed=5)), x)
    b = route(train_router(x, y, RouterConfig(loss="center"), TrainBudget(router_steps=6, router_batch=4, seed=5)), x)
    torch.testing.assert_close(a, b)


def test_router_counts_steps() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = _striped_maps(10, g)
    r = train_router(
        x, y, RouterConfig(loss="center"), TrainBudget(router_steps=7, router_batch=4, seed=0)
    )  # reshuffles after 2 steps of 4 of 10 images
    assert r.loss_history.shape == (7,) and torch.isfinite(r.loss_history).all()
    assert train_router(x, y, RouterConfig(loss="softmax"), TrainBudget(router_steps=0)).loss_history.shape == (0,)
