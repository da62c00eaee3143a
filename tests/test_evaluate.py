"""Evaluation: per-subclass metrics by hand; run_method, the one path from a category to metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adlib.data import ADCategory, ADSplit
from adlib.evaluate import overall_metrics, run_method, subclass_means, subclass_metrics
from adlib.methods import METHODS
from adlib.methods.adapted_moe import AdaptedMoEConfig
from adlib.methods.anomaly_moe import AnomalyMoEConfig
from adlib.methods.base import TrainBudget
from adlib.methods.simplenet import SimpleNetConfig
from adlib.metrics import METRIC_NAMES

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


def test_run_method_is_one_path_for_every_method() -> None:
    """Fit, score, maps and all metrics, timed, for each registered method; a clear anomaly is found."""
    g = torch.Generator().manual_seed(0)
    train = torch.randn(8, 6, 4, 4, generator=g)  # [N, C, h, w]
    test = torch.randn(4, 6, 4, 4, generator=g)
    test[2:, :, 1, 1] += 8.0  # images 2 and 3: one far-off patch
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[2:, 4:8, 4:8] = True  # that patch, at 16 px
    cat = _category([0, 0, 1, 1], [0, 0, 0, 0], masks, size=16)
    cat.train.subclasses = None  # no labels: Adapted-MoE makes its own (pseudo_subclasses)
    configs = {
        "patchcore": None,
        "simplenet": SimpleNetConfig(hidden=16, noise_scale="patch_norm"),
        "adapted_moe": AdaptedMoEConfig(expert=SimpleNetConfig(hidden=16), pseudo_subclasses=2, top_k=1),
        "anomaly_moe": AnomalyMoEConfig(experts_per_level=2, router_hidden=8, patch_hidden=4, global_hidden=8),
    }
    # DVAD takes the encoder's stage maps, not one [N, C, h, w] map: its run_method test is
    # tests/methods/test_dvad.py::test_run_method_takes_stage_maps_and_finds_a_clear_anomaly.
    assert set(configs) | {"dvad"} == set(METHODS)
    for name, cfg in configs.items():
        ev = run_method(name, cat, train, test, TrainBudget(steps=5, patches_per_step=32, router_steps=2), cfg)
        assert ev.maps.shape == (4, 16, 16) and ev.scores.shape == (4,)
        assert set(ev.metrics) == set(METRIC_NAMES) and {"fit_s", "score_s", "map_s"} <= set(ev.timings)
        assert ev.model is not None and ev.model.score(test).shape == (4, 4, 4)
    pc = run_method("patchcore", cat, train, test, TrainBudget())
    assert pc.metrics["I-AUROC"] == 1.0 and pc.metrics["P-AUROC"] > 0.9


def test_feature_key_tells_paddings_and_patch_sizes_apart() -> None:
    """Models are cached under feature_key: features aggregated differently must never share a key."""
    from adlib.evaluate import feature_key
    from adlib.features import FeatureConfig, FeatureExtractor

    split = ADSplit(np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int64), None, ["good"] * 2, ["a", "b"])
    cat = ADCategory("toy", "c", split, split, "test")
    keys = {
        (pad, k): feature_key(
            cat, FeatureExtractor(FeatureConfig(padding=pad, patch_size=k), device="cpu", pretrained=False)
        )
        for pad in ("exclude", "zeros")
        for k in (1, 3)
    }
    assert len(set(keys.values())) == 4
    same = FeatureExtractor(FeatureConfig(), device="cpu", pretrained=False)
    assert feature_key(cat, same) == keys[("zeros", 3)]  # and the default is the same key every time
