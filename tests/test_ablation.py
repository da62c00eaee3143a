"""Ablation bookkeeping: which configurations share a training; score grids equal the usual path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from adlib import ablation
from adlib.ablation import ABLATION_FLAGS, ScoreGrid, ablation_configs, fit_ablation, run_ablation, training_key
from adlib.methods.adapted_moe import AdaptedMoEConfig, predict
from adlib.methods.base import TrainBudget
from adlib.methods.simplenet import SimpleNetConfig
from adlib.paper_numbers.adapted_moe import TABLE3_FLAGS

from .helpers import FAST, TINY, subclass_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_key_and_ablation_trains_four_times(monkeypatch: pytest.MonkeyPatch) -> None:
    base = AdaptedMoEConfig()
    assert training_key(base) == training_key(replace(base, tta=False, top_k=1, temperature=0.1))
    assert training_key(base) != training_key(replace(base, norm=False))
    assert training_key(base) != training_key(replace(base, routing_loss="softmax"))
    # without MoE the routing loss is irrelevant
    off = replace(base, moe=False)
    assert training_key(off) == training_key(replace(off, routing_loss="softmax"))

    cfgs = ablation_configs(TINY)
    assert len(cfgs) == 8 and len({(c.moe, c.tta, c.norm) for c in cfgs}) == 8
    assert [(c.moe, c.tta, c.norm) for c in cfgs] == ABLATION_FLAGS
    assert ABLATION_FLAGS[:7] == TABLE3_FLAGS  # the paper's rows first, as paper_numbers infers them
    calls = []
    real_fit = ablation.adapted_moe.fit

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ablation.adapted_moe, "fit", counting_fit)
    g = torch.Generator().manual_seed(4)
    feats, sub = subclass_data(g, n_per=4)
    preds = run_ablation(feats, feats[:3], cfgs, FAST, sub)
    assert len(calls) == 4
    assert [(p.cfg.moe, p.cfg.tta, p.cfg.norm) for p in preds] == [(c.moe, c.tta, c.norm) for c in cfgs]


def test_fit_ablation_keys() -> None:
    g = torch.Generator().manual_seed(8)
    feats, sub = subclass_data(g, n_per=4)
    models = fit_ablation(feats, ablation_configs(TINY), FAST, sub)
    assert len(models) == 4
    assert {(m.cfg.moe, m.cfg.norm) for m in models.values()} == {(a, b) for a in (False, True) for b in (False, True)}
    for key, m in models.items():
        assert training_key(m.cfg) == key
        assert m.n_experts == (3 if m.cfg.moe else 1)


def test_score_grid_equals_predict() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, 1, 1, generator=g) * 2
    feats = torch.cat([means[k] + torch.randn(6, 6, 4, 4, generator=g) for k in range(3)])  # [18, 6, 4, 4]
    sub = np.repeat([0, 1, 2], 6)
    cfgs = ablation_configs(AdaptedMoEConfig(expert=SimpleNetConfig(hidden=16)))
    models = fit_ablation(feats, cfgs, TrainBudget(steps=3, patches_per_step=32, router_steps=3, router_batch=4), sub)
    grid = ScoreGrid({(m.cfg.moe, m.cfg.norm): m for m in models.values()}).compute(feats)
    assert grid.n_experts(True, True) == 3 and grid.n_experts(False, True) == 1
    for (moe, norm), model in grid.models.items():
        for tta in (False, True):
            for k in (1, 2, 3) if moe else (1,):
                expect = predict(model, feats, tta=tta, top_k=k).patch_scores
                torch.testing.assert_close(grid.patch_scores(moe, tta, norm, k), expect)
