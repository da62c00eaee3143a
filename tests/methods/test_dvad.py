"""DVAD: shapes through the whole model, the loss falls on a tiny run, scores, switches, seeds, batch independence."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from adlib.methods import METHODS
from adlib.methods.base import TrainBudget
from adlib.methods.dvad import (
    DVAD,
    DVADConfig,
    combine_scales,
    fit,
    reconstruction_loss,
    scale_scores,
    trained_config,
    with_test_time,
)

TINY = DVADConfig(dims=(16, 8, 8, 8), directions=2, batch=4, score_batch=5)


def pyramid(n: int = 12, seed: int = 0) -> list[torch.Tensor]:
    """Encoder-like maps at strides 4, 8, 16 of a 64-px image: [n, 4, 16, 16], [n, 6, 8, 8], [n, 8, 4, 4]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s, generator=g) for c, s in ((4, 16), (6, 8), (8, 4))]


def test_shapes_through_the_whole_model(one_thread) -> None:
    maps = pyramid()
    model = DVAD([4, 6, 8], TINY)
    recon = model(maps)
    assert [r.shape for r in recon] == [m.shape for m in maps]
    assert model.score(maps).shape == (12, 16, 16)  # the finest scale
    gates = model.gate_maps(maps)
    assert [tuple(g.shape) for g in gates] == [(12, 5, 2, 2), (12, 5, 4, 4), (12, 5, 8, 8)]  # one per GLD block
    for g in gates:
        torch.testing.assert_close(g.sum(1), torch.ones_like(g[:, 0]))


def test_the_loss_falls_on_a_tiny_run(one_thread) -> None:
    model = fit(pyramid(), TINY, TrainBudget(steps=30, seed=0))
    h = model.loss_history
    assert h.shape == (30,) and torch.isfinite(h).all()
    assert h[-5:].mean() < 0.8 * h[:5].mean()
    assert not model.training


def test_training_is_deterministic_given_the_seed(one_thread) -> None:
    a, b = (fit(pyramid(), TINY, TrainBudget(steps=3, seed=1)) for _ in range(2))
    torch.testing.assert_close(a.loss_history, b.loss_history)
    c = fit(pyramid(), TINY, TrainBudget(steps=3, seed=2))
    assert not torch.equal(a.loss_history, c.loss_history)


def test_scores_against_their_formulas() -> None:
    r, f = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(scale_scores([r], [f], "cosine")[0], 1 - F.cosine_similarity(r, f, dim=1))
    torch.testing.assert_close(scale_scores([r], [f], "mse")[0], ((r - f) ** 2).mean(1))
    fine, coarse = torch.rand(2, 4, 4), torch.rand(2, 2, 2)
    up = F.interpolate(coarse[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(combine_scales([fine, coarse]), (fine + up) / 2)
    loss = reconstruction_loss([r, r[:, :, :2, :2]], [f, f[:, :, :2, :2]])
    torch.testing.assert_close(loss, F.mse_loss(r, f) + F.mse_loss(r[:, :, :2, :2], f[:, :, :2, :2]))
    with pytest.raises(ValueError, match="score must be one of"):
        scale_scores([r], [f], "l1")


def test_the_score_is_a_test_time_switch(one_thread) -> None:
    cfg = dataclasses.replace(TINY, score="mse")
    assert trained_config(cfg) == trained_config(TINY)  # one trained model serves both scores (one cache entry)
    assert trained_config(cfg).score == "cosine"
    model = fit(pyramid(), TINY, TrainBudget(steps=2))
    maps = pyramid(4, seed=3)
    cos = model.score(maps)
    mse = with_test_time(model, cfg).score(maps)
    torch.testing.assert_close(mse, model.score(maps, "mse"))
    both = model.score_all(maps)
    torch.testing.assert_close(both["mse"], mse)
    torch.testing.assert_close(both["cosine"], cos)
    assert not torch.allclose(cos, mse)
    assert METHODS["dvad"].trained_config(cfg) == trained_config(TINY)


def test_an_image_scores_the_same_alone_and_in_a_batch(one_thread) -> None:
    """Per-image plug-in, InstanceNorm per image and BatchNorm in eval mode: no image sees another at test time."""
    model = fit(pyramid(), TINY, TrainBudget(steps=2))
    maps = pyramid(5, seed=4)
    together = model.score(maps)
    alone = torch.cat([model.score([m[i : i + 1] for m in maps]) for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_mamba": False, "use_cnn": False, "use_hyper": False}, "at least one of"),
        ({"experts": 0}, "experts must be >= 1"),
        ({"score": "l2"}, "score must be one of"),
        ({"dims": (8, 8, 8), "depths": (1, 1, 0)}, "need 4 stages for 3 maps"),
        ({"batch": 1}, "batch must be >= 2"),
    ],
)
def test_config_errors_name_the_parameter(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        DVAD([4, 6, 8], dataclasses.replace(TINY, **change))


def test_fit_refuses_aggregated_features() -> None:
    with pytest.raises(ValueError, match="stage maps"):
        fit(torch.randn(4, 8, 4, 4), TINY, TrainBudget(steps=1))  # type: ignore[arg-type]


def test_run_method_takes_stage_maps_and_finds_a_clear_anomaly(one_thread) -> None:
    """The one path (adlib.evaluate.run_method) works for DVAD, whose features are the encoder's stage maps."""
    import numpy as np

    from adlib.data import ADCategory, ADSplit
    from adlib.evaluate import run_method

    base = pyramid(1, seed=9)  # one normal "look", shared by all images, plus a little noise
    train = [b + 0.1 * n for b, n in zip(base, pyramid(12), strict=True)]
    test = [b + 0.1 * n for b, n in zip(base, pyramid(4, seed=5), strict=True)]
    for m in test:
        m[2:, :, : m.shape[2] // 4, : m.shape[3] // 4] += 10.0  # images 2, 3: the top-left corner is far off
    masks = np.zeros((4, 64, 64), dtype=bool)
    masks[2:, :16, :16] = True

    def split(n: int, labels: list[int], m: np.ndarray | None) -> ADSplit:
        images = np.zeros((n, 64, 64, 3), np.uint8)
        return ADSplit(images, np.asarray(labels), m, ["good"] * n, [str(i) for i in range(n)])

    cat = ADCategory("toy", "cat", split(12, [0] * 12, None), split(4, [0, 0, 1, 1], masks), "test")
    ev = run_method("dvad", cat, train, test, TrainBudget(steps=40), TINY)
    assert ev.maps.shape == (4, 64, 64) and {"fit_s", "score_s", "map_s"} <= set(ev.timings)
    assert ev.metrics["I-AUROC"] == 1.0 and ev.metrics["P-AUROC"] > 0.9  # the corner is found


# ----------------------------------------------------------------------------- mutations the tiny model hid (issue 22)


def test_each_map_is_rebuilt_by_the_stage_of_its_size_with_unequal_widths(one_thread) -> None:
    """Stage widths that differ (as MambaAD's 512/256/128/64) make a head fed by the wrong stage fail."""
    cfg = dataclasses.replace(TINY, dims=(20, 12, 10, 6))
    model = DVAD([4, 6, 8], cfg)
    assert [h.in_channels for h in model.heads] == [6, 10, 12]  # finest map <- last stage
    recon = model(pyramid(2))
    assert [tuple(r.shape) for r in recon] == [(2, 4, 16, 16), (2, 6, 8, 8), (2, 8, 4, 4)]


def test_the_class_embedding_reaches_every_gld_block(one_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    from adlib.nn.decoder import GLDBlock

    seen = []
    forward = GLDBlock.forward
    monkeypatch.setattr(GLDBlock, "forward", lambda self, x, e=None: seen.append(e) or forward(self, x, e))
    maps = pyramid(2)
    DVAD([4, 6, 8], TINY)(maps)
    assert len(seen) == 3 and all(e is not None for e in seen)
    for e in seen:
        torch.testing.assert_close(e, maps[-1].mean(dim=(2, 3)))  # E: the deepest map's global average
    seen.clear()
    DVAD([4, 6, 8], dataclasses.replace(TINY, class_embedding=False))(maps)
    assert seen == [None] * 3


def test_fit_drops_the_learning_rate_tenfold_at_80_percent(one_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    lrs = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):  # noqa: ANN001, ANN202
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    fit(pyramid(), TINY, TrainBudget(steps=10))
    assert lrs == pytest.approx([0.005] * 8 + [0.0005] * 2)


def test_the_channel_mean_floor_reconstructs_every_position_as_the_training_mean() -> None:
    from adlib.methods.dvad import ChannelMeanFloor

    train = pyramid(6)
    floor = ChannelMeanFloor.fit(train)
    test = pyramid(2, seed=1)
    recon = floor(test)
    for r, t, f in zip(recon, test, train, strict=True):
        torch.testing.assert_close(r, f.mean(dim=(0, 2, 3))[None, :, None, None].expand_as(t))
    want = combine_scales([1 - F.cosine_similarity(r, t, dim=1) for r, t in zip(recon, test, strict=True)])
    torch.testing.assert_close(floor.score(test), want)
    means = [f.mean(dim=(0, 2, 3))[None, :, None, None].expand(1, -1, s.shape[2], s.shape[3]).clone()
             for f, s in zip(train, test, strict=True)]  # fmt: skip
    assert floor.score(means).abs().max() < 1e-5  # a map equal to the means scores 0
    assert floor.score(test, "mse").shape == (2, 16, 16)


# ----------------------------------------------------------------------------- options for the rule (issue 22)


def test_the_cosine_loss_is_the_sum_over_scales_of_the_mean_one_minus_cos() -> None:
    recon, maps = pyramid(3, seed=1), pyramid(3, seed=2)
    want = sum((1 - F.cosine_similarity(r, f, dim=1)).mean() for r, f in zip(recon, maps, strict=True))
    torch.testing.assert_close(reconstruction_loss(recon, maps, "cosine"), want)
    mse = sum(F.mse_loss(r, f) for r, f in zip(recon, maps, strict=True))
    torch.testing.assert_close(reconstruction_loss(recon, maps), mse)
    with pytest.raises(ValueError, match="loss must be one of"):
        reconstruction_loss(recon, maps, "l1")


def test_fit_uses_the_configured_loss_and_clipping(one_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from adlib.methods import dvad

    norms, kinds = [], []
    clip, loss = nn.utils.clip_grad_norm_, dvad.reconstruction_loss
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda p, m: norms.append(m) or clip(p, m))
    monkeypatch.setattr(dvad, "reconstruction_loss", lambda r, x, kind="mse": kinds.append(kind) or loss(r, x, kind))
    fit(pyramid(), dataclasses.replace(TINY, loss="cosine", clip=5.0), TrainBudget(steps=2))
    assert norms == [5.0, 5.0] and kinds == ["cosine", "cosine"]
    norms.clear(), kinds.clear()
    fit(pyramid(), TINY, TrainBudget(steps=2))
    assert norms == [] and kinds == ["mse", "mse"]  # the defaults: no clipping, the MSE


def test_the_sum_fusion_adds_the_pyramid_before_the_1x1(monkeypatch: pytest.MonkeyPatch) -> None:
    from adlib.nn.decoder import MultiScaleFusion, Residual

    torch.manual_seed(0)
    fusion = MultiScaleFusion([4, 6, 8], 10, mode="sum", blocks=3).eval()
    assert fusion.merge[0].in_channels == 8 and isinstance(fusion.bottleneck[1], Residual)
    seen = []
    fusion.merge.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    maps = pyramid(2)
    with torch.no_grad():
        out = fusion(maps)
        summed = sum(down(m) for down, m in zip(fusion.down, maps, strict=True))
    torch.testing.assert_close(seen[0], summed)
    assert out.shape == (2, 10, 2, 2)
    assert MultiScaleFusion([4, 6, 8], 10).merge[0].in_channels == 24  # concat: L x C_L


def test_direct_comparison_where_widths_are_equal(one_thread) -> None:
    from torch import nn

    cfg = dataclasses.replace(TINY, dims=(16, 8, 6, 4), depths=(1, 1, 1, 1), direct=True)
    model = DVAD([4, 6, 8], cfg)
    assert all(isinstance(h, nn.Identity) for h in model.heads)  # widths 4, 6, 8 reached by the stages
    maps = pyramid(2)
    outs = model.decoder(model.fusion(maps), model.class_embed(maps))
    for r, o in zip(model(maps), reversed(outs[1:]), strict=True):
        torch.testing.assert_close(r, o)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"loss": "l1"}, "DVADConfig.loss"), ({"fusion": "max"}, "DVADConfig.fusion"),
     ({"fusion_blocks": 0}, "DVADConfig.fusion_blocks"), ({"clip": 0.0}, "DVADConfig.clip")],
)  # fmt: skip
def test_new_options_are_checked(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DVAD([4, 6, 8], dataclasses.replace(TINY, **change))


def test_fit_takes_the_held_out_loss_on_the_given_normals(one_thread) -> None:
    maps, held = pyramid(12), pyramid(5, seed=3)
    model = fit(maps, dataclasses.replace(TINY, loss="cosine"), TrainBudget(steps=4, eval_every=4), heldout_maps=held)
    ((step, value),) = model.heldout_history
    assert step == 4
    model.eval()
    with torch.no_grad():
        assert value == pytest.approx(float(reconstruction_loss(model(held), held, "cosine")), rel=1e-5)
    with pytest.raises(ValueError, match="heldout_maps"):
        fit(maps, TINY, TrainBudget(steps=1), heldout_maps=[held[0]])


def test_adapter_effect_switches_the_generated_adapters_off_and_restores_them(one_thread) -> None:
    from adlib.methods.dvad import adapter_effect

    maps = pyramid(6)
    model = DVAD([4, 6, 8], dataclasses.replace(TINY, hyper_gate=0.5)).eval()
    before = model.score(maps)
    rows = adapter_effect(model, maps)
    assert [r["gate"] for r in rows] == [0.5, 0.5, 0.5]
    torch.testing.assert_close(model.score(maps), before)  # the gates are restored
    plugins = [b.hyper for b in model.decoder.blocks()]
    with torch.no_grad():
        r_on = model(maps)
        for p in plugins:
            p.gate.zero_()
        r_off, s_off = model(maps), model.score(maps)
        for p in plugins:
            p.gate.fill_(0.5)
    num = sum(float((a - b).square().sum()) for a, b in zip(r_on, r_off, strict=True))
    want = (num / sum(float(a.square().sum()) for a in r_on)) ** 0.5
    assert rows[0]["reconstruction change"] == pytest.approx(want, rel=1e-5) and want > 0
    assert rows[0]["score change"] == pytest.approx(
        float((s_off - before).abs().mean() / before.abs().mean()), rel=1e-5
    )
    assert adapter_effect(DVAD([4, 6, 8], dataclasses.replace(TINY, use_hyper=False)), maps) == []
    from adlib.methods.dvad import adapters_off

    with pytest.raises(RuntimeError), adapters_off(model):  # the trained gates come back after an error too
        raise RuntimeError
    assert [float(p.gate) for p in plugins] == [0.5, 0.5, 0.5]


def test_gate_usage_shares_entropy_and_top_share() -> None:
    from adlib.methods.dvad import gate_usage

    uniform = torch.full((2, 4, 3, 3), 0.25)
    u = gate_usage(uniform)
    assert u["entropy"] == pytest.approx(1.0) and u["top share"] == pytest.approx(0.25)
    one = torch.zeros(2, 4, 3, 3)
    one[:, 2] = 1.0
    o = gate_usage(one)
    assert o["share E3"] == pytest.approx(1.0) and o["entropy"] == pytest.approx(0.0, abs=1e-9) and o["top share"] == 1
    half = torch.zeros(2, 4, 3, 3)
    half[0, 0], half[1, 1] = 1.0, 1.0  # each image one expert, two experts overall
    h = gate_usage(half)
    assert h["share E1"] == pytest.approx(0.5) and h["entropy"] == pytest.approx(math.log(2) / math.log(4))
    assert h["top share"] == 1.0  # every position one-hot, though the shares are spread
    with pytest.raises(ValueError, match="gates"):
        gate_usage(torch.full((2, 4, 3), 0.25))
