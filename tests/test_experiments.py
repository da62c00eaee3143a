"""Experiment glue: per-subclass metrics by hand, and the score grid against adlib.moe.predict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adlib.data import ADCategory, ADSplit
from adlib.experiments import ScoreGrid, maps_and_scores, overall_metrics, subclass_means, subclass_metrics
from adlib.moe import AdaptedMoEConfig, ablation_configs, fit_ablation, predict
from adlib.simplenet import SimpleNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _category(labels: list[int], subclasses: list[int], masks: np.ndarray | None, size: int = 4) -> ADCategory:
    n = len(labels)
    split = ADSplit(
        images=np.zeros((n, size, size, 3), dtype=np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        masks=masks,
        defect_types=["good" if y == 0 else "x" for y in labels],
        names=[str(i) for i in range(n)],
        subclasses=np.asarray(subclasses, dtype=np.int64),
    )
    train = split.subset([i for i, y in enumerate(labels) if y == 0])
    return ADCategory("toy", "cat", train, split, "test", subclass_names=["a", "b", "c"], unseen_subclasses=["b"])


def test_subclass_metrics_by_hand() -> None:
    # subclass a: normal scores [0.1, 0.5], anomalous [0.4, 0.9] -> pairs (0.4>0.1, 0.4<0.5, 0.9>both) = 3/4
    # subclass b (unseen): normal [0.8], anomalous [0.2, 0.3] -> 0/2; subclass c: normal only -> NaN
    labels = [0, 0, 1, 1, 0, 1, 1, 0]
    subs = [0, 0, 0, 0, 1, 1, 1, 2]
    scores = np.array([0.1, 0.5, 0.4, 0.9, 0.8, 0.2, 0.3, 0.0])
    masks = np.zeros((8, 4, 4), dtype=bool)
    masks[[2, 3, 5, 6], 0, 0] = True  # one defective pixel per anomalous image
    maps = np.zeros((8, 4, 4), dtype=np.float32)
    maps[[2, 3], 0, 0] = 1.0  # subclass a: both defects found -> P-AUROC 1
    maps[5, 1, 1] = 1.0  # subclass b: a normal pixel outscores every defect -> P-AUROC < 0.5
    cat = _category(labels, subs, masks)
    rows = subclass_metrics(cat, scores, maps)
    assert [r["subclass"] for r in rows] == ["a", "b", "c"]
    assert [r["seen"] for r in rows] == [True, False, True]
    assert [(r["normal"], r["anomalous"]) for r in rows] == [(2, 2), (1, 2), (1, 0)]
    assert rows[0]["I-AUROC"] == pytest.approx(0.75)
    assert rows[1]["I-AUROC"] == 0.0
    assert math.isnan(rows[2]["I-AUROC"])
    assert rows[0]["P-AUROC"] == 1.0
    # subclass b: 2 defect pixels (score 0) vs 46 normal pixels (one at 1, 45 at 0) -> (45 * 0.5) / 46
    assert rows[1]["P-AUROC"] == pytest.approx(45 * 0.5 / 46)
    means = subclass_means(rows)
    assert means["seen I-AUROC"] == pytest.approx(0.75)  # NaN of subclass c left out
    assert means["unseen I-AUROC"] == 0.0
    assert means["seen P-AUROC"] == pytest.approx(1.0)
    assert math.isnan(subclass_metrics(cat, scores)[0]["P-AUROC"])  # no maps: undefined
    overall = overall_metrics(cat, scores, maps)
    assert set(overall) == {"I-AUROC", "P-AUROC"}


def test_subclass_metrics_needs_labels() -> None:
    cat = _category([0, 1], [0, 0], None)
    cat.test.subclasses = None
    with pytest.raises(ValueError, match="no subclass labels"):
        subclass_metrics(cat, np.zeros(2))


def test_maps_and_scores_shapes() -> None:
    cat = _category([0, 1], [0, 1], None, size=16)
    maps, scores = maps_and_scores(cat, torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4))
    assert maps.shape == (2, 16, 16) and scores.shape == (2,)
    assert scores[1] > scores[0]


def test_score_grid_equals_predict() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, 1, 1, generator=g) * 2
    feats = torch.cat([means[k] + torch.randn(6, 6, 4, 4, generator=g) for k in range(3)])  # [18, 6, 4, 4]
    sub = np.repeat([0, 1, 2], 6)
    cfgs = ablation_configs(AdaptedMoEConfig(expert=SimpleNetConfig(hidden=16)))
    models = fit_ablation(feats, sub, cfgs, steps=3, patches_per_step=32, router_steps=3, router_batch=4, seed=0)
    grid = ScoreGrid({(m.cfg.moe, m.cfg.norm): m for m in models.values()}).compute(feats)
    assert grid.n_experts(True, True) == 3 and grid.n_experts(False, True) == 1
    for (moe, norm), model in grid.models.items():
        for tta in (False, True):
            for k in (1, 2, 3) if moe else (1,):
                expect = predict(model, feats, tta=tta, top_k=k).patch_scores
                torch.testing.assert_close(grid.patch_scores(moe, tta, norm, k), expect)
