"""AnomalyMoE: components (k-means parts), training bookkeeping, fusion with training statistics, switches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from adlib.methods import METHODS
from adlib.methods import anomaly_moe as amoe
from adlib.methods import components as comp
from adlib.methods.anomaly_moe import AnomalyMoEConfig, fit, predict
from adlib.methods.base import TrainBudget

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = AnomalyMoEConfig(
    experts_per_level=2,
    top_k=2,
    router_hidden=8,
    patch_hidden=3,
    component_hidden=(8,),
    component_bottleneck=4,
    global_hidden=16,
    global_latent=4,
    component_clusters=4,
    component_min_area=0.02,  # parts of 3+ of the 144 positions
    batch_size=6,
    lr=5e-3,
)
PARTS = ((2, 2), (2, 8), (8, 5))  # top-left corners of the toy's three 2x2 parts


def toy_scenes(n: int, seed: int = 0, missing: int | None = None) -> torch.Tensor:
    """``[n, 4, 12, 12]``: background (channel 0) with three 2x2 parts (channels 1-3), small noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 4, 12, 12)
    x[:, 0] = 1.0
    for p, (r, c) in enumerate(PARTS):
        if p != missing:
            x[:, 0, r : r + 2, c : c + 2] = 0.0
            x[:, p + 1, r : r + 2, c : c + 2] = 1.0
    return x + 0.02 * torch.randn(x.shape, generator=g)  # [n, 4, 12, 12]


# ----------------------------------------------------------------------------- components


def test_components_are_deterministic_and_follow_the_parts() -> None:
    train = toy_scenes(6)
    centres = comp.fit_centres(train, k=4, seed=0)
    torch.testing.assert_close(centres, comp.fit_centres(train, k=4, seed=0))  # deterministic by seed
    normal = comp.components_of(toy_scenes(1, seed=1), centres, min_area_fraction=0.02)
    assert len(normal) == 3  # the background touches all four sides: dropped
    masks = {tuple(m.nonzero()[0].tolist()) for m in normal.masks}  # each part's first position
    assert masks == {(r, c) for r, c in PARTS} and all(m.sum() == 4 for m in normal.masks)
    removed = comp.components_of(toy_scenes(1, seed=1, missing=1), centres, min_area_fraction=0.02)
    assert len(removed) == 2  # a missing part removes its component, the others stay as they were
    assert {tuple(m.nonzero()[0].tolist()) for m in removed.masks} == masks - {PARTS[1]}


def test_find_components_filters_small_and_border_parts() -> None:
    labels = torch.zeros(2, 6, 6, dtype=torch.long)  # image 0: cluster 1 in two parts, one at the border
    labels[0, 2:4, 2:4] = 1  # 4 positions, inside
    labels[0, 0, 0] = 1  # 1 position, touches 2 sides
    labels[1, 3, 3] = 2  # image 1: one position of cluster 2
    found = comp.find_components(labels, k=3, min_area=1, max_border_sides=1, whole_if_none=False)
    assert found.owner.tolist() == [0, 1] and found.cluster.tolist() == [1, 2]
    found = comp.find_components(labels, k=3, min_area=2, max_border_sides=4, whole_if_none=False)
    assert found.owner.tolist() == [0, 0, 1] and found.cluster.tolist() == [0, 1, 0]  # now with the background
    assert found.masks.sum(dim=(1, 2)).tolist() == [31, 4, 35]  # the 1-position part at (0, 0) is too small
    found = comp.find_components(labels, k=3, min_area=2, max_border_sides=1, whole_if_none=True)
    assert found.owner.tolist() == [0, 1] and found.cluster.tolist() == [1, -1]
    assert found.masks[1].all()  # image 1 has no part left: the whole image is its one component


def test_pool_and_paint_by_hand() -> None:
    feats = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)  # [2, 1, 3, 3]
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 0, 1] = True  # image 1, values 9 and 10
    masks[1, 1, 1] = True  # image 0, value 4
    parts = comp.Components(masks, torch.tensor([1, 0]), torch.tensor([0, 1]))
    torch.testing.assert_close(comp.pool(feats, parts, dilation=1), torch.tensor([[9.5], [4.0]]))
    torch.testing.assert_close(comp.pool(feats, parts, dilation=3)[1], feats[0, :, :, :].mean(dim=(1, 2)))
    painted = comp.paint(torch.tensor([0.5, 2.0]), parts, n=2)  # [2, 3, 3]
    assert painted[1, 0, 0] == 0.5 and painted[0, 1, 1] == 2.0 and painted.sum() == 0.5 * 2 + 2.0
    with pytest.raises(ValueError, match="component_dilation"):
        comp.pool(feats, parts, dilation=2)


# ----------------------------------------------------------------------------- training and scoring


@pytest.fixture(scope="module")
def trained() -> Iterator[tuple[amoe.AnomalyMoE, torch.Tensor]]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the one_thread fixture is not active yet
    train = toy_scenes(24)
    yield fit(train, TINY, TrainBudget(steps=40, seed=0)), train
    torch.set_num_threads(n)


@torch.no_grad()
def level_loss(model: amoe.AnomalyMoE, feats: torch.Tensor, level: str) -> float:
    """Mean training loss of all of ``level``'s experts on all of ``feats`` (no routing)."""
    model.eval()
    x = model.standardize(feats)  # [N, C, h, w]
    if level == "component":
        _, pooled = amoe.component_features(model, x)  # [M, C]
        return float(torch.stack([amoe.component_pass(model, i, pooled).mean() for i in range(2)]).mean())
    run = amoe.patch_pass if level == "patch" else amoe.global_pass
    return float(torch.stack([run(model, i, x)[0].mean() for i in range(2)]).mean())


def test_fit_shapes_history_and_loss_falls(trained: tuple[amoe.AnomalyMoE, torch.Tensor]) -> None:
    model, train = trained
    assert model.expert_names == [f"{lvl} {i}" for lvl in amoe.LEVELS for i in range(2)]
    assert set(model.loss_history) == set(amoe.LOSS_TERMS)
    assert all(v.shape == (40,) and torch.isfinite(v).all() for v in model.loss_history.values())
    for lvl in amoe.LEVELS:  # each level's experts on all training images: lower after 80 steps than after 1
        first = fit(train, replace(TINY, levels=(lvl,), top_k=1), TrainBudget(steps=1, seed=0))
        last = fit(train, replace(TINY, levels=(lvl,), top_k=1), TrainBudget(steps=80, seed=0))
        assert level_loss(last, train, lvl) < 0.85 * level_loss(first, train, lvl), lvl
    test = toy_scenes(3, seed=5, missing=0)
    assert model.score(test).shape == (3, 12, 12)
    pred = predict(model, test)
    assert pred.weights.shape == (3, 6) and ((pred.weights > 0).sum(dim=1) == 2).all()  # top-2 of 6 experts
    torch.testing.assert_close(pred.weights.sum(dim=1), torch.ones(3))
    assert set(pred.raw) == set(amoe.LEVELS) and all(m.shape == (3, 12, 12) for m in pred.normalized.values())
    by_hand = sum(pred.group_weights[lvl][:, None, None] * pred.normalized[lvl] for lvl in amoe.LEVELS)
    torch.testing.assert_close(pred.fused, by_hand)
    torch.testing.assert_close(model.level_maps(test)["patch"], pred.normalized["patch"])


def test_fit_is_deterministic_by_seed() -> None:
    train, test = toy_scenes(12), toy_scenes(2, seed=7)
    one, again, other = (fit(train, TINY, TrainBudget(steps=10, seed=s)) for s in (0, 0, 1))
    torch.testing.assert_close(again.score(test), one.score(test))
    torch.testing.assert_close(again.loss_history["total"], one.loss_history["total"])
    assert not torch.equal(other.score(test), one.score(test))


def test_normalisation_uses_training_statistics_only(trained: tuple[amoe.AnomalyMoE, torch.Tensor]) -> None:
    model, train = trained
    lo, hi = model.norm_lo.clone(), model.norm_hi.clone()
    pred = predict(model, train)  # all 24 training images (norm_images = 512)
    for j, lvl in enumerate(model.cfg.levels):
        vals = pred.raw[lvl][pred.group_weights[lvl] > 0].flatten()
        if len(vals) == 0:  # a level that no training image selected keeps (0, 1)
            assert (lo[j], hi[j]) == (0, 1)
            continue
        q = torch.quantile(vals.double(), torch.tensor(model.cfg.norm_quantiles, dtype=torch.float64)).float()
        torch.testing.assert_close(torch.stack([lo[j], hi[j]]), q)
    test = toy_scenes(4, seed=9, missing=2) * 3.0  # very different test data
    full = model.score(test)
    assert torch.equal(model.norm_lo, lo) and torch.equal(model.norm_hi, hi)  # scoring changes nothing
    torch.testing.assert_close(model.score(test[:1]), full[:1])  # an image's score ignores the other test images


def test_a_foreign_patch_scores_higher_at_the_patch_level(trained: tuple[amoe.AnomalyMoE, torch.Tensor]) -> None:
    model, _ = trained
    normal = toy_scenes(4, seed=11)
    odd = normal.clone()
    odd[:, :, 5:7, 2:5] = torch.tensor([-1.0, 2.0, -2.0, 1.0])[:, None, None]  # a part unlike any in training
    s_normal, s_odd = model.level_maps(normal)["patch"], model.level_maps(odd)["patch"]  # [4, 12, 12]
    assert (s_odd[:, 5:7, 2:5].mean(dim=(1, 2)) > s_normal[:, 5:7, 2:5].mean(dim=(1, 2)) + 0.5).all()


@pytest.mark.parametrize("levels", [("patch",), ("component",), ("global",), ("global", "patch")])
def test_levels_switch(levels: tuple[str, ...]) -> None:
    cfg = replace(TINY, levels=levels, top_k=1)
    model = fit(toy_scenes(8), cfg, TrainBudget(steps=3))
    assert len(model.expert_names) == 2 * len(levels) and model.router[-1].out_features == 2 * len(levels)
    assert len(model.patch) == 2 * ("patch" in levels) and len(model.component) == 2 * ("component" in levels)
    pred = predict(model, toy_scenes(2, seed=3))
    assert set(pred.raw) == set(levels) and pred.fused.shape == (2, 12, 12)
    for lvl in levels:  # test-time subsets: one level's term alone
        alone = predict(model, toy_scenes(2, seed=3), levels=(lvl,)).fused
        torch.testing.assert_close(alone, pred.group_weights[lvl][:, None, None] * pred.normalized[lvl])


def test_eir_and_esb_switches() -> None:
    cfg = replace(TINY, eir_weight=0.0, esb_weight=0.0)
    model = fit(toy_scenes(8), cfg, TrainBudget(steps=3))
    assert (model.loss_history["eir"] == 0).all() and (model.loss_history["estimator"] == 0).all()
    h = model.loss_history
    torch.testing.assert_close(h["total"], h["reconstruction"] + h["routing"])
    on = fit(toy_scenes(8), TINY, TrainBudget(steps=3))
    assert (on.loss_history["estimator"] != 0).all() and (on.loss_history["esb"] > 0).all()


def test_router_signal_switch() -> None:
    """router_signal "loss" (authors): one term trains experts and router; "relative": the router has its own term."""
    authors = fit(toy_scenes(8), replace(TINY, router_signal="loss"), TrainBudget(steps=3))
    assert (authors.loss_history["routing"] == 0).all()
    ours = fit(toy_scenes(8), TINY, TrainBudget(steps=3))  # the default
    assert (ours.loss_history["routing"] > 0).all()
    # the experts' terms are the same at the first step (same initial weights, same batch)
    torch.testing.assert_close(ours.loss_history["reconstruction"][0], authors.loss_history["reconstruction"][0])


@pytest.mark.parametrize("global_map", amoe.GLOBAL_MAPS)
def test_global_maps(global_map: str) -> None:
    model = fit(toy_scenes(8), replace(TINY, levels=("global",), global_map=global_map), TrainBudget(steps=2))
    x = model.standardize(toy_scenes(2, seed=4))
    loss, amap, pooled = amoe.global_pass(model, 0, x)
    assert loss.shape == (2,) and amap.shape == (2, 12, 12) and pooled.shape == (2, 4) and (amap >= -1e-6).all()


def test_config_errors() -> None:
    feats = toy_scenes(4)
    with pytest.raises(ValueError, match="levels"):
        fit(feats, replace(TINY, levels=("patch", "pixel")), TrainBudget(steps=1))
    with pytest.raises(ValueError, match="levels"):
        fit(feats, replace(TINY, levels=()), TrainBudget(steps=1))
    with pytest.raises(ValueError, match="top_k"):
        fit(feats, replace(TINY, top_k=7), TrainBudget(steps=1))
    with pytest.raises(ValueError, match="global_map"):
        fit(feats, replace(TINY, global_map="student"), TrainBudget(steps=1))
    with pytest.raises(ValueError, match="router_signal"):
        fit(feats, replace(TINY, router_signal="gradient"), TrainBudget(steps=1))
    with pytest.raises(ValueError, match="z_loss"):
        fit(feats, replace(TINY, z_loss="l1"), TrainBudget(steps=1))
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        fit(feats[0], TINY, TrainBudget(steps=1))


def test_authors_code_preset_differs_in_the_documented_switches_only() -> None:
    assert amoe.AUTHORS_CODE == replace(AnomalyMoEConfig(), router_signal="loss", global_map="mse")


def test_registered() -> None:
    spec = METHODS["anomaly_moe"]
    assert spec.config is AnomalyMoEConfig and spec.fit is fit and not spec.needs_subclasses


def test_eir_fresh_feeds_the_estimators_the_experts_after_their_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: the authors train the CLUB estimators on a fresh forward after the experts' step."""
    from adlib.nn import losses

    seen: dict[str, list[torch.Tensor]] = {"bound": [], "estimator": []}
    bound, likelihood = amoe.club_upper_bound, amoe.club_log_likelihood
    monkeypatch.setattr(amoe, "club_upper_bound", lambda e, a, b: seen["bound"].append(a.detach()) or bound(e, a, b))
    monkeypatch.setattr(
        amoe, "club_log_likelihood", lambda e, a, b: seen["estimator"].append(a.detach()) or likelihood(e, a, b)
    )
    assert losses.club_upper_bound is bound  # the spies sit where fit looks them up
    cfg = replace(TINY, patch_dropout=0.0, global_dropout=0.0, eir_weight=1.0)
    for fresh in (False, True):
        seen["bound"].clear(), seen["estimator"].clear()
        fit(toy_scenes(8), replace(cfg, eir_fresh=fresh), TrainBudget(steps=1))
        same = all(torch.equal(a, b) for a, b in zip(seen["bound"], seen["estimator"], strict=True))
        assert len(seen["estimator"]) == 2 and same == (not fresh)  # patch and global pairs


def test_clip_bounds_the_experts_and_routers_gradient_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The authors clip the gradient norm of experts and router at 0.1 (issue 23); off by default."""
    from torch import nn

    seen = []
    clip = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda p, m: seen.append(m) or clip(p, m))
    fit(toy_scenes(8), replace(TINY, clip=0.1, eir_weight=0.0), TrainBudget(steps=2))
    assert seen == [0.1, 0.1]
    seen.clear()
    fit(toy_scenes(8), replace(TINY, eir_weight=0.0), TrainBudget(steps=2))
    assert seen == []
    with pytest.raises(ValueError, match="clip must be > 0"):
        fit(toy_scenes(8), replace(TINY, clip=0.0), TrainBudget(steps=1))
