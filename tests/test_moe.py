"""Adapted-MoE: Norm, TTA (eq. 5-6), top-k aggregation (eq. 4), training bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import adlib.moe as moe
from adlib.moe import (
    AdaptedMoEConfig,
    ablation_configs,
    aggregate_topk,
    all_expert_scores,
    feature_stats,
    fit_ablation,
    fit_adapted_moe,
    normalize,
    predict,
    pseudo_subclasses,
    run_ablation,
    test_time_adapt,
    topk_weights,
    training_key,
    with_router,
)
from adlib.paper_numbers import ADAPTED_MOE_TABLE3, ADAPTED_MOE_TABLE3_FLAGS, ADAPTED_MOE_TABLE4
from adlib.simplenet import SimpleNetConfig

TINY = AdaptedMoEConfig(expert=SimpleNetConfig(hidden=32), top_k=2)
FAST = {"steps": 2, "patches_per_step": 64, "router_steps": 2, "router_batch": 4}  # a few steps: bookkeeping tests


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


def _subclass_data(g: torch.Generator, n_per: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """3 subclasses whose features differ in mean and scale (labels 2, 5, 7: not 0..K-1)."""
    means = torch.randn(3, 8, 1, 1, generator=g) * 2
    scales = torch.tensor([0.5, 1.0, 2.0])[:, None, None, None]
    feats = torch.cat([means[k] + scales[k] * torch.randn(n_per, 8, 4, 4, generator=g) for k in range(3)])
    return feats, np.repeat([2, 5, 7], n_per)


def test_fit_and_predict_shapes_and_topk_consistency() -> None:
    g = torch.Generator().manual_seed(0)
    feats, sub = _subclass_data(g)
    model = fit_adapted_moe(feats, sub, TINY, steps=4, patches_per_step=64, router_steps=4, router_batch=4, seed=0)
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
    feats, _ = _subclass_data(g)
    cfg = AdaptedMoEConfig(moe=False, tta=True, norm=False, expert=SimpleNetConfig(hidden=32))
    model = fit_adapted_moe(feats, None, cfg, **FAST, seed=0)
    assert model.n_experts == 1 and model.router is None
    c, s = feature_stats(feats)  # TTA without MoE: global training centre and std
    torch.testing.assert_close(model.centers[0], c)
    torch.testing.assert_close(model.stds[0], s)
    pred = predict(model, feats[:3])
    torch.testing.assert_close(pred.weights, torch.ones(3, 1))
    plain = predict(model, feats[:3], tta=False).patch_scores
    torch.testing.assert_close(plain, model.experts[0].score(feats[:3]))
    with pytest.raises(ValueError):
        fit_adapted_moe(feats, None, AdaptedMoEConfig(), steps=1)


def test_norm_stats_are_on_normalised_features() -> None:
    g = torch.Generator().manual_seed(2)
    feats, sub = _subclass_data(g)
    model = fit_adapted_moe(feats, sub, TINY, **FAST, seed=0)
    c, _ = feature_stats(normalize(feats[:8]))
    torch.testing.assert_close(model.centers[0], c)
    x = moe.expert_input(model, feats[:2], 0, tta=False)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(2, 4, 4))


def test_fit_is_deterministic() -> None:
    g = torch.Generator().manual_seed(3)
    feats, sub = _subclass_data(g)
    a = predict(fit_adapted_moe(feats, sub, TINY, **FAST, seed=7), feats[:4])
    b = predict(fit_adapted_moe(feats, sub, TINY, **FAST, seed=7), feats[:4])
    torch.testing.assert_close(a.patch_scores, b.patch_scores)
    torch.testing.assert_close(a.weights, b.weights)


def test_training_key_and_ablation_trains_four_times(monkeypatch: pytest.MonkeyPatch) -> None:
    base = AdaptedMoEConfig()
    from dataclasses import replace

    assert training_key(base) == training_key(replace(base, tta=False, top_k=1, temperature=0.1))
    assert training_key(base) != training_key(replace(base, norm=False))
    assert training_key(base) != training_key(replace(base, routing_loss="softmax"))
    # without MoE the routing loss is irrelevant
    off = replace(base, moe=False)
    assert training_key(off) == training_key(replace(off, routing_loss="softmax"))

    cfgs = ablation_configs(TINY)
    assert len(cfgs) == 8 and len({(c.moe, c.tta, c.norm) for c in cfgs}) == 8
    assert [(c.moe, c.tta, c.norm) for c in cfgs[:7]] == ADAPTED_MOE_TABLE3_FLAGS
    calls = []
    real_fit = moe.fit_adapted_moe

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(moe, "fit_adapted_moe", counting_fit)
    g = torch.Generator().manual_seed(4)
    feats, sub = _subclass_data(g, n_per=4)
    preds = run_ablation(feats, sub, feats[:3], cfgs, **FAST, seed=0)
    assert len(calls) == 4
    assert [(p.cfg.moe, p.cfg.tta, p.cfg.norm) for p in preds] == [(c.moe, c.tta, c.norm) for c in cfgs]


def test_with_router_shares_the_experts() -> None:
    g = torch.Generator().manual_seed(7)
    feats, sub = _subclass_data(g)
    model = fit_adapted_moe(feats, sub, TINY, **FAST, seed=0)
    other = with_router(model, feats, sub, "softmax", router_steps=3, router_batch=4, seed=1)
    assert other.cfg.routing_loss == "softmax" and model.cfg.routing_loss == "center"
    assert all(a is b for a, b in zip(other.experts, model.experts, strict=True))  # the same modules, not copies
    assert other.router is not model.router and other.router.loss_history.shape == (3,)
    torch.testing.assert_close(other.centers, model.centers)
    # the experts' scores do not depend on the router
    torch.testing.assert_close(all_expert_scores(other, feats[:3]), all_expert_scores(model, feats[:3]))
    with pytest.raises(ValueError, match="differ"):
        with_router(model, feats[:16], sub[:16], "center")  # only 2 of the 3 subclasses
    flat = fit_adapted_moe(feats, None, AdaptedMoEConfig(moe=False, expert=SimpleNetConfig(hidden=32)), **FAST)
    with pytest.raises(ValueError, match="no router"):
        with_router(flat, feats, sub, "center")


def test_fit_ablation_keys() -> None:
    g = torch.Generator().manual_seed(8)
    feats, sub = _subclass_data(g, n_per=4)
    models = fit_ablation(feats, sub, ablation_configs(TINY), **FAST, seed=0)
    assert len(models) == 4
    assert {(m.cfg.moe, m.cfg.norm) for m in models.values()} == {(a, b) for a in (False, True) for b in (False, True)}
    for key, m in models.items():
        assert training_key(m.cfg) == key
        assert m.n_experts == (3 if m.cfg.moe else 1)


def test_pseudo_subclasses_recover_clusters() -> None:
    g = torch.Generator().manual_seed(5)
    centres = torch.eye(6)[:3] * 5  # three directions of GAP feature space
    y = np.repeat([0, 1, 2], 10)
    feats = centres[y][:, :, None, None] + 0.3 * torch.randn(30, 6, 3, 3, generator=g)
    labels = pseudo_subclasses(feats, 3, seed=0)
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert adjusted_rand_score(y, labels) == 1.0
    assert np.array_equal(labels, pseudo_subclasses(feats, 3, seed=0))


def test_paper_numbers_tables() -> None:
    full = [q for q in ADAPTED_MOE_TABLE3 if q.method == "SimpleNet +MoE +TTA +Norm"]
    assert {(q.dataset, q.metric): q.value for q in full}[("Texture-AD (cloth, unseen subclasses)", "P-AUROC")] == 76.05
    center = [q for q in ADAPTED_MOE_TABLE4 if "center" in q.method and q.metric == "I-AUROC"]
    assert sorted(q.value for q in center) == [55.50, 56.21, 67.53]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    g = torch.Generator().manual_seed(6)
    feats, sub = _subclass_data(g)
    model = fit_adapted_moe(feats, sub, TINY, **FAST, device="cuda", seed=0)
    assert model.centers.device.type == "cuda"
    pred = predict(model, feats[:4])
    assert pred.patch_scores.device.type == "cpu" and torch.isfinite(pred.patch_scores).all()
    every = all_expert_scores(model, feats[:4])
    torch.testing.assert_close(pred.patch_scores, aggregate_topk(every, pred.weights, TINY.top_k))
