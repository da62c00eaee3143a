"""Routing network: eq. (1), eq. (2), the Wen et al. centre update, ranked list loss, routing."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adlib.methods.base import TrainBudget
from adlib.methods.routing import (
    RouterConfig,
    RoutingNetwork,
    class_means,
    route,
    routing_accuracy,
    routing_loss,
    train_router,
)
from adlib.nn.losses import ranked_list_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_embedding_is_eq1() -> None:
    g = torch.Generator().manual_seed(0)
    net = RoutingNetwork(4, 5, 3, norm=False)
    net.reset_parameters(g)
    assert net.proj.weight.shape == (5, 4, 3, 3)  # eq. (1): a 3x3 convolution (W_i, b_i)
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
    # ranked_list: alpha * L_RLL on the L2-normalised embeddings + (1 - alpha) * CE, every RLL knob passed on
    cfg = RouterConfig(
        loss="ranked_list", alpha=0.3, rll_boundary=1.1, rll_margin=0.5, rll_temperature=3.0, rll_lambda=0.7
    )
    rll = ranked_list_loss(F.normalize(x, dim=1), labels, boundary=1.1, margin=0.5, temperature=3.0, lam=0.7)
    torch.testing.assert_close(routing_loss(net, x, logits, labels, cfg), 0.3 * rll + 0.7 * ce)
    with pytest.raises(ValueError, match="loss must be one of"):
        routing_loss(net, x, logits, labels, RouterConfig(loss="triplet"))


def test_loss_switch_by_hand() -> None:
    """Table 4's three routing losses on three embeddings with a known answer."""
    # x (not unit-norm): e1 * 3 and e2 * 4 in subclass 0, -e1 * 2 in subclass 1
    x = torch.tensor([[3.0, 0.0], [0.0, 4.0], [-2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    net = RoutingNetwork(1, 2, 2)
    net.centers.copy_(torch.tensor([[0.0, 0.0], [-2.0, 1.0]]))  # squared distances 9, 16, 1
    # CE: -log p(y) = log 2, log(4/3), log 2
    ce = (2 * math.log(2.0) + math.log(4 / 3)) / 3
    center = 26 / 3
    # Ranked list loss on the unit vectors e1, e2, -e1 (d = sqrt 2, 2, sqrt 2), boundary 1.5, margin 0.3:
    # positives a-b at sqrt 2 > 1.2 pay sqrt 2 - 1.2 for both anchors; negatives b-c at sqrt 2 < 1.5 pay
    # lambda * (1.5 - sqrt 2) for anchors b and c; a-c at 2 > 1.5 is trivial.
    r2, lam = math.sqrt(2.0), 0.5
    rll = (2 * (r2 - 1.2) + 2 * lam * (1.5 - r2)) / 3
    common = dict(alpha=0.25, rll_boundary=1.5, rll_margin=0.3, rll_lambda=lam)
    expect = {"softmax": ce, "center": 0.25 * center + 0.75 * ce, "ranked_list": 0.25 * rll + 0.75 * ce}
    for loss, value in expect.items():
        got = routing_loss(net, x, logits, labels, RouterConfig(loss=loss, **common)).item()
        assert got == pytest.approx(value, rel=1e-6), loss


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


def _train_recording(x: torch.Tensor, y: torch.Tensor, cfg: RouterConfig, budget: TrainBudget):
    """train_router, recording (centres, input batch, embeddings) at every training forward pass."""
    from torch.nn.modules.module import register_module_forward_hook

    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(module: torch.nn.Module, args: tuple, out: tuple) -> None:
        if isinstance(module, RoutingNetwork) and module.training:
            steps.append((module.centers.clone(), args[0].clone(), out[0].detach().clone()))

    handle = register_module_forward_hook(record)
    try:
        router = train_router(x, y, cfg, budget)
    finally:
        handle.remove()
    return router, steps


def test_centres_follow_the_wen_update_during_training() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = _striped_maps(12, g)
    cfg = RouterConfig(loss="center", center_rate=0.3)
    budget = TrainBudget(router_steps=5, router_batch=4, seed=2)
    _, steps = _train_recording(x, y, cfg, budget)
    assert len(steps) == 5
    # step 0 uses the subclass means of the initial embeddings (= the untrained router's centres)
    untrained = train_router(x, y, cfg, replace(budget, router_steps=0))
    torch.testing.assert_close(steps[0][0], untrained.centers)
    for (c, xb, emb), (c_next, _, _) in pairwise(steps):
        yb = torch.stack([y[(x == row).flatten(1).all(1)][0] for row in xb])  # labels of the batch
        expect = c.clone()
        for j in range(3):  # Wen et al.: c_j <- c_j - rate * sum_{y_i = j} (c_j - x_i) / (1 + n_j)
            mine = emb[yb == j]
            expect[j] = c[j] - 0.3 * (c[j] - mine).sum(0) / (1 + len(mine))
        torch.testing.assert_close(c_next, expect)
        assert not torch.allclose(c_next, c)  # the centres do move


@pytest.mark.parametrize("loss", ["softmax", "center"])
def test_final_centres_are_subclass_means_of_final_embeddings(loss: str) -> None:
    g = torch.Generator().manual_seed(4)
    x, y = _striped_maps(12, g)
    router = train_router(x, y, RouterConfig(loss=loss), TrainBudget(router_steps=4, router_batch=4, seed=0))
    with torch.no_grad():
        emb = router.embed(x)  # [N, E]
    for j in range(3):
        torch.testing.assert_close(router.centers[j], emb[y == j].mean(0))


@pytest.mark.parametrize("norm", [False, True])
def test_router_follows_the_norm_switch(norm: bool) -> None:
    g = torch.Generator().manual_seed(5)
    x, y = _striped_maps(9, g)
    router = train_router(x, y, RouterConfig(norm=norm), TrainBudget(router_steps=2, router_batch=4))
    assert router.norm is norm
    with torch.no_grad():
        lengths = router.embed(x).norm(dim=1)  # [N]
    assert torch.allclose(lengths, torch.ones(9)) is norm


def test_class_means_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    means = class_means(x, torch.tensor([0, 0, 1]), 3)  # class 1 has one sample, class 2 none
    torch.testing.assert_close(means, torch.tensor([[2.0, 3.0], [5.0, -6.0], [0.0, 0.0]]))


def test_route_embeddings_is_per_row_cosine() -> None:
    net = RoutingNetwork(2, 2, 2)
    net.centers.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    x = torch.tensor([[5.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # cosines [1, 0], [0, 1], [r, r]
    e = math.e
    expect = torch.tensor([[e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)], [0.5, 0.5]])
    torch.testing.assert_close(net.route_embeddings(x), expect)


def test_train_router_settings() -> None:
    g = torch.Generator().manual_seed(6)
    x, y = _striped_maps(9, g)
    budget = TrainBudget(router_steps=2, router_batch=4)
    # emb_dim, an absent last subclass (n_classes > max + 1), int32 labels
    router = train_router(x, y.numpy().astype(np.int32), RouterConfig(emb_dim=5), budget, n_classes=4)
    assert router.proj.out_channels == 5 and router.n_classes == 4 and router.centers.shape == (4, 5)
    torch.testing.assert_close(router.centers[3], torch.zeros(5))  # no sample: a zero centre
    with pytest.raises(ValueError, match="loss must be one of"):
        train_router(x, y, RouterConfig(loss="triplet"), budget)
    assert train_router(x, y, RouterConfig(temperature=0.3), budget).temperature == 0.3
    assert RoutingNetwork(2, 2, 2).norm  # Norm on by default, as RouterConfig
    # float64 features train the same router
    as_float64 = train_router(x.double(), y, None, budget)
    torch.testing.assert_close(route(as_float64, x), route(train_router(x, y, None, budget), x))


def test_router_learning_rate_is_used() -> None:
    # lr = 0: Adam leaves every weight where the seed put it (the untrained router of router_steps=0)
    g = torch.Generator().manual_seed(7)
    x, y = _striped_maps(9, g)
    frozen = train_router(x, y, RouterConfig(lr=0.0), TrainBudget(router_steps=3, router_batch=4, seed=1))
    untrained = train_router(x, y, RouterConfig(), TrainBudget(router_steps=0, seed=1))
    torch.testing.assert_close(frozen.proj.weight, untrained.proj.weight, rtol=0, atol=0)
    torch.testing.assert_close(frozen.classifier.weight, untrained.classifier.weight, rtol=0, atol=0)
