"""Adapted-MoE: Norm, TTA (eq. 5-6), top-k aggregation (eq. 4), training bookkeeping."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from adlib.methods import adapted_moe as moe
from adlib.methods import simplenet
from adlib.methods.adapted_moe import (
    AdaptedMoEConfig,
    all_expert_scores,
    feature_stats,
    fit,
    normalize,
    predict,
    pseudo_subclasses,
    test_time_adapt,
    with_router,
)
from adlib.methods.base import TrainBudget
from adlib.methods.routing import RouterConfig, route, train_router
from adlib.methods.simplenet import SimpleNetConfig
from adlib.nn.gating import aggregate_topk

from ..helpers import FAST, TINY, subclass_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_normalize() -> None:
    torch.testing.assert_close(normalize(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]))
    x = torch.randn(2, 5, 3, 4)  # [N, C, h, w]
    torch.testing.assert_close(normalize(x).norm(dim=1), torch.ones(2, 3, 4))
    assert torch.equal(normalize(torch.zeros(1, 2)), torch.zeros(1, 2))  # no division by zero


def test_test_time_adapt_by_hand() -> None:
    # one image, 2 channels, 1 x 2 patches: channel 0 = [1, 3] (mean 2, std 1),
    # channel 1 = [0, 4] (mean 2, std 2); target centre [3, 4], std [1, 1]
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 4.0]]]])  # [1, 2, 1, 2]
    center, std = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 1.0])
    # eq. (5): channel 0 -> (x - 2) * 1 / 1 + 3 = [2, 4]; channel 1 -> (x - 2) * 1 / 2 + 4 = [3, 5]
    y = test_time_adapt(x, center, std, l2=False)
    torch.testing.assert_close(y, torch.tensor([[[[2.0, 4.0]], [[3.0, 5.0]]]]))
    torch.testing.assert_close(y.mean(dim=(2, 3))[0], center)
    torch.testing.assert_close(y.std(dim=(2, 3), correction=0)[0], std)
    # eq. (6): patches (2, 3) and (4, 5) divided by sqrt(13) and sqrt(41)
    z = test_time_adapt(x, center, std)
    expect = torch.tensor([[[[2 / math.sqrt(13), 4 / math.sqrt(41)]], [[3 / math.sqrt(13), 5 / math.sqrt(41)]]]])
    torch.testing.assert_close(z, expect)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(1, 1, 2))


def test_test_time_adapt_is_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 5, generator=g) * torch.tensor([1.0, 5.0, 0.1])[:, None, None, None]
    center, std = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5
    y = test_time_adapt(x, center, std, l2=False)
    for i in range(3):  # every image gets the target statistics, whatever its own scale
        torch.testing.assert_close(y[i].mean(dim=(1, 2)), center)
        torch.testing.assert_close(y[i].std(dim=(1, 2), correction=0), std, rtol=1e-4, atol=1e-5)
    # an image adapted to its own statistics is unchanged; [N, C] statistics per image
    own_c, own_s = x.mean(dim=(2, 3)), x.std(dim=(2, 3), correction=0)
    torch.testing.assert_close(test_time_adapt(x, own_c, own_s, l2=False), x, rtol=1e-4, atol=1e-5)


def test_feature_stats_by_hand() -> None:
    # C = 1; image 0 = [0, 2] (var 1), image 1 = [4, 8] (var 4)
    f = torch.tensor([[[[0.0, 2.0]]], [[[4.0, 8.0]]]])  # [2, 1, 1, 2]
    c, s = feature_stats(f)
    torch.testing.assert_close(c, torch.tensor([3.5]))
    torch.testing.assert_close(s, torch.tensor([math.sqrt(2.5)]))


def test_fit_and_predict_shapes_and_topk_consistency() -> None:
    g = torch.Generator().manual_seed(0)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, TrainBudget(steps=4, patches_per_step=64, router_steps=4, router_batch=4), sub)
    assert model.n_experts == 3 and model.subclass_ids == [2, 5, 7]
    assert model.centers.shape == (3, 8) and model.stds.shape == (3, 8)
    test = feats[::3]
    for tta in (False, True):
        every = all_expert_scores(model, test, tta=tta)  # [N, K, h, w]
        assert every.shape == (len(test), 3, 4, 4)
        for k in (1, 2, 3):
            pred = predict(model, test, tta=tta, top_k=k)
            assert pred.patch_scores.shape == (len(test), 4, 4)
            torch.testing.assert_close(pred.weights.sum(1), torch.ones(len(test)))
            assert int((pred.mixture > 0).sum(1).max()) == k
            torch.testing.assert_close(pred.patch_scores, aggregate_topk(every, pred.weights, k))
            assert (pred.cfg.tta, pred.cfg.top_k) == (tta, k)
    # TTA feeds each expert unit-norm features adapted to its own centre and std
    x = moe.expert_input(model, test, 1, tta=True)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(len(test), 4, 4))


def test_without_moe_is_one_simplenet() -> None:
    g = torch.Generator().manual_seed(1)
    feats, _ = subclass_data(g)
    cfg = AdaptedMoEConfig(moe=False, tta=True, norm=False, expert=SimpleNetConfig(hidden=32))
    model = fit(feats, cfg, FAST)
    assert model.n_experts == 1 and model.router is None and model.subclass_ids == [-1]
    c, s = feature_stats(feats)  # TTA without MoE: global training centre and std
    torch.testing.assert_close(model.centers[0], c)
    torch.testing.assert_close(model.stds[0], s)
    pred = predict(model, feats[:3])
    torch.testing.assert_close(pred.weights, torch.ones(3, 1))
    plain = predict(model, feats[:3], tta=False).patch_scores
    torch.testing.assert_close(plain, model.experts[0].score(feats[:3]))
    # with MoE and no labels, fit makes cfg.pseudo_subclasses of them (our extension)
    pseudo = fit(feats, AdaptedMoEConfig(expert=SimpleNetConfig(hidden=32), pseudo_subclasses=2), FAST)
    assert pseudo.n_experts == 2 and pseudo.subclass_ids == [0, 1]


def test_norm_stats_are_on_normalised_features() -> None:
    g = torch.Generator().manual_seed(2)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, FAST, sub)
    c, _ = feature_stats(normalize(feats[:8]))
    torch.testing.assert_close(model.centers[0], c)
    x = moe.expert_input(model, feats[:2], 0, tta=False)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(2, 4, 4))


def test_fit_is_deterministic() -> None:
    g = torch.Generator().manual_seed(3)
    feats, sub = subclass_data(g)
    a = predict(fit(feats, TINY, FAST.with_seed(7), sub), feats[:4])
    b = predict(fit(feats, TINY, FAST.with_seed(7), sub), feats[:4])
    torch.testing.assert_close(a.patch_scores, b.patch_scores)
    torch.testing.assert_close(a.weights, b.weights)


def test_with_router_shares_the_experts() -> None:
    g = torch.Generator().manual_seed(7)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, FAST, sub)
    other = with_router(model, feats, sub, "softmax", TrainBudget(router_steps=3, router_batch=4, seed=1))
    assert other.cfg.routing_loss == "softmax" and model.cfg.routing_loss == "center"
    assert all(a is b for a, b in zip(other.experts, model.experts, strict=True))  # the same modules, not copies
    assert other.router is not model.router and other.router.loss_history.shape == (3,)
    torch.testing.assert_close(other.centers, model.centers)
    # the experts' scores do not depend on the router
    torch.testing.assert_close(all_expert_scores(other, feats[:3]), all_expert_scores(model, feats[:3]))
    with pytest.raises(ValueError, match="differ"):
        with_router(model, feats[:16], sub[:16], "center")  # only 2 of the 3 subclasses
    flat = fit(feats, AdaptedMoEConfig(moe=False, expert=SimpleNetConfig(hidden=32)), FAST)
    with pytest.raises(ValueError, match="no router"):
        with_router(flat, feats, sub, "center")


def test_pseudo_subclasses_recover_clusters() -> None:
    g = torch.Generator().manual_seed(5)
    centres = torch.eye(6)[:3] * 5  # three directions of GAP feature space
    y = np.repeat([0, 1, 2], 10)
    feats = centres[y][:, :, None, None] + 0.3 * torch.randn(30, 6, 3, 3, generator=g)
    labels = pseudo_subclasses(feats, 3, seed=0)
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert adjusted_rand_score(y, labels) == 1.0
    assert np.array_equal(labels, pseudo_subclasses(feats, 3, seed=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    g = torch.Generator().manual_seed(6)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, replace(FAST, device="cuda"), sub)
    assert model.centers.device.type == "cuda"
    pred = predict(model, feats[:4])
    assert pred.patch_scores.device.type == "cpu" and torch.isfinite(pred.patch_scores).all()
    every = all_expert_scores(model, feats[:4])
    torch.testing.assert_close(pred.patch_scores, aggregate_topk(every, pred.weights, TINY.top_k))


@pytest.mark.parametrize("norm", [True, False])
def test_experts_are_simplenets_on_their_own_subclass(norm: bool) -> None:
    # Expert k = SimpleNet trained on subclass k's features (L2-normalised when Norm is on), seed + 1 + k;
    # with Norm its hook normalises whatever it scores.
    g = torch.Generator().manual_seed(8)
    feats, sub = subclass_data(g)
    cfg = replace(TINY, norm=norm)
    budget = TrainBudget(steps=3, patches_per_step=32, router_steps=1, router_batch=4, seed=4)
    model = fit(feats, cfg, budget, sub)
    test = 3 * feats[::5]  # scaled: Norm makes the scale irrelevant
    for k, s in enumerate([2, 5, 7]):
        fk = feats[torch.as_tensor(sub == s)]
        ref = simplenet.fit(normalize(fk) if norm else fk, cfg.expert, budget.with_seed(4 + 1 + k))
        torch.testing.assert_close(model.experts[k].score(test), ref.score(normalize(test) if norm else test))
        c, sd = feature_stats(normalize(fk) if norm else fk)  # TTA statistics of expert k
        torch.testing.assert_close(model.centers[k], c)
        torch.testing.assert_close(model.stds[k], sd)


def test_tta_adapts_to_each_experts_own_statistics() -> None:
    g = torch.Generator().manual_seed(9)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, FAST, sub)
    assert not torch.allclose(model.centers[0], model.centers[1])
    test = feats[::4]
    every = all_expert_scores(model, test, tta=True)  # [N, K, h, w]
    for k, expert in enumerate(model.experts):
        fk = normalize(feats[torch.as_tensor(sub == [2, 5, 7][k])])
        c, s = feature_stats(fk)
        adapted = test_time_adapt(test, c, s, TINY.tta_eps)  # eq. (5)-(6) onto expert k
        torch.testing.assert_close(every[:, k], expert.score(adapted, transform=False))
    pred = predict(model, test, tta=True)
    torch.testing.assert_close(pred.patch_scores, (pred.mixture[:, :, None, None] * every).sum(1))


@pytest.mark.parametrize("norm", [True, False])
def test_router_follows_the_norm_switch(norm: bool) -> None:
    g = torch.Generator().manual_seed(10)
    feats, sub = subclass_data(g)
    model = fit(feats, replace(TINY, norm=norm), FAST, sub)
    for m in (model, with_router(model, feats, sub, "softmax", FAST)):
        assert m.router.norm is norm
        with torch.no_grad():
            lengths = m.router.embed(feats).norm(dim=1)  # [N]
        assert torch.allclose(lengths, torch.ones(len(feats))) is norm


def test_the_other_reading_of_eq6_skips_it_without_norm() -> None:
    g = torch.Generator().manual_seed(9)
    feats, _ = subclass_data(g)
    raw = fit(feats, AdaptedMoEConfig(moe=False, norm=False, expert=SimpleNetConfig(hidden=16)), FAST)
    x = moe.expert_input(raw, feats[:2], 0, tta=True)  # our reading: eq. (5) then eq. (6)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(2, 4, 4))
    other = moe.with_config(raw, tta_l2_without_norm=False)
    y = moe.expert_input(other, feats[:2], 0, tta=True)  # eq. (5) only: the expert's own statistics
    torch.testing.assert_close(y, test_time_adapt(feats[:2], raw.centers[0], raw.stds[0], l2=False))
    assert other.experts[0] is raw.experts[0] and raw.cfg.tta_l2_without_norm  # shared, original unchanged
    normed = fit(feats, AdaptedMoEConfig(moe=False, norm=True, expert=SimpleNetConfig(hidden=16)), FAST)
    z = moe.expert_input(moe.with_config(normed, tta_l2_without_norm=False), feats[:2], 0, tta=True)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2, 4, 4))  # with Norm eq. (6) stays
    with pytest.raises(ValueError, match="test-time switches"):
        moe.with_config(raw, norm=True)


def test_without_moe_the_single_simplenet_is_simplenet_fit() -> None:
    """One seed convention: the baseline of Table 3 is the very model simplenet.fit makes (notebooks 02-04)."""
    g = torch.Generator().manual_seed(10)
    feats, _ = subclass_data(g)
    budget = FAST.with_seed(3)
    single = fit(feats, AdaptedMoEConfig(moe=False, norm=False, expert=SimpleNetConfig(hidden=16)), budget)
    plain = simplenet.fit(feats, SimpleNetConfig(hidden=16), budget)
    torch.testing.assert_close(single.experts[0].score(feats[:2]), plain.score(feats[:2]))


def test_routing_weights_use_the_test_time_temperature() -> None:
    g = torch.Generator().manual_seed(11)
    feats, sub = subclass_data(g)
    model = fit(feats, TINY, FAST, sub)
    router = model.router
    torch.testing.assert_close(moe.routing_weights(model, feats), route(router, feats, 1.0))
    torch.testing.assert_close(moe.routing_weights(model, feats, 0.05), route(router, feats, 0.05))
    assert not torch.allclose(route(router, feats, 0.05), route(router, feats, 1.0))
    # the model's test-time temperature, not the one the router was trained with
    cfg = replace(model.cfg, temperature=0.05)
    cold = moe.AdaptedMoE(cfg, list(model.experts), router, model.centers, model.stds, model.subclass_ids)
    torch.testing.assert_close(moe.routing_weights(cold, feats), route(router, feats, 0.05))
    torch.testing.assert_close(predict(cold, feats).weights, route(router, feats, 0.05))


def test_test_time_adapt_keeps_the_feature_dtype() -> None:
    x = torch.randn(2, 3, 4, 4)  # float32 features, float64 statistics
    y = test_time_adapt(x, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert y.dtype == torch.float32


def test_l2_normalize_module() -> None:
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # [1, 2, 1, 1]
    torch.testing.assert_close(moe.L2Normalize()(x), torch.tensor([[[[0.6]], [[0.8]]]]))  # over channels
    y = torch.randn(3, 2, 4, 5)
    torch.testing.assert_close(moe.L2Normalize(dim=2)(y), normalize(y, dim=2))


def test_fit_takes_float64_features_as_float32() -> None:
    g = torch.Generator().manual_seed(13)
    feats, sub = subclass_data(g)
    a = fit(feats, TINY, FAST, sub)
    b = fit(feats.double(), TINY, FAST, sub)
    assert b.centers.dtype == torch.float32 and b.stds.dtype == torch.float32
    torch.testing.assert_close(predict(b, feats[:4]).patch_scores, predict(a, feats[:4]).patch_scores)


def test_pseudo_subclasses_follow_the_budget_seed() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 4, 3, 3, generator=g)  # no clusters: the k-means seed decides the labels
    cfg = replace(TINY, pseudo_subclasses=3)
    budget = replace(FAST, seed=3)
    labels = pseudo_subclasses(feats, 3, seed=3)
    assert not np.array_equal(labels, pseudo_subclasses(feats, 3, seed=0))  # so the seed matters here
    model = fit(feats, cfg, budget)  # no subclass labels: k-means with the budget's seed
    for k in range(3):
        c, _ = feature_stats(normalize(feats[torch.as_tensor(labels == k)]))
        torch.testing.assert_close(model.centers[k], c)


def test_with_router_trains_the_configured_router_with_the_budget() -> None:
    g = torch.Generator().manual_seed(15)
    feats, sub = subclass_data(g)
    cfg = replace(TINY, temperature=0.5, routing_loss="ranked_list", router=RouterConfig(lr=5e-3, rll_margin=0.3))
    budget = TrainBudget(steps=2, patches_per_step=64, router_steps=3, router_batch=4, seed=6)
    model = fit(feats, cfg, budget, sub)
    labels = np.searchsorted([2, 5, 7], sub)
    rcfg = RouterConfig(loss="ranked_list", norm=True, temperature=0.5, lr=5e-3, rll_margin=0.3)
    ref = train_router(feats, labels, rcfg, budget, 3)
    assert model.router.temperature == 0.5 and model.router.loss_history.shape == (3,)
    torch.testing.assert_close(model.router.loss_history, ref.loss_history)
    torch.testing.assert_close(model.router.centers, ref.centers)
    with pytest.raises(ValueError, match="MoE needs subclass labels"):
        with_router(model, feats, None, "center", budget)
    flat = fit(feats, replace(TINY, moe=False), FAST)
    with pytest.raises(ValueError, match="a model without MoE has no router"):
        with_router(flat, feats, sub, "center", budget)
