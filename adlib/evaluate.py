"""One path from a category to maps, scores, metrics and timings, for any method; per-subclass metrics.

``run_method(name, category, train_feats, test_feats, budget)`` fits the method of
``adlib.methods.METHODS`` on the training features, scores the test features, turns the patch
scores into maps and image scores (`adlib.maps`) and computes every metric (`adlib.metrics`), timing
fit and scoring. Notebooks, ``python -m adlib bench`` and the tests all go through it.

Adapted-MoE (Lei, Chen et al., 2024) reports every number *per unseen subclass* (Tables 1-2) and as
the average over a category's unseen subclasses (Tables 1-4): :func:`subclass_metrics` computes
exactly that, I-AUROC from the image scores of one subclass's normal and anomalous test images,
P-AUROC from the maps of that subclass's test images against their masks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import ADCategory
from .features import FeatureExtractor, cached_features
from .maps import DEFAULT_SIGMA, maps_and_scores
from .methods import METHODS, Method
from .methods.base import TrainBudget
from .metrics import compute_metrics, ranking_metrics


@dataclass
class Evaluation:
    """Scores, maps and metrics of one method on one category's test split."""

    metrics: dict[str, float]
    scores: np.ndarray  # [N] image scores
    maps: np.ndarray  # [N, S, S] anomaly maps
    timings: dict[str, float] = field(default_factory=dict)  # seconds: fit_s, score_s, map_s
    model: Any = None  # the fitted model, where run_method made one


def category_features(
    category: ADCategory, extractor: FeatureExtractor, cache_dir: str | Path | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached patch features of the train and test split: ([N_train, C, h, w], [N_test, C, h, w])."""
    train = cached_features(extractor, category.train, category.key, "train", cache_dir, progress)
    test = cached_features(extractor, category.test, category.key, "test", cache_dir, progress)
    return train, test


def evaluate_patch_scores(
    category: ADCategory,
    patch_scores: torch.Tensor | np.ndarray,
    sigma: float = DEFAULT_SIGMA,
    score_mode: str = "max",
) -> Evaluation:
    """Patch scores [N, h, w] of the test split -> maps, image scores and all metrics."""
    t0 = time.perf_counter()
    maps, scores = maps_and_scores(patch_scores, category.image_size, sigma, score_mode)  # [N, S, S], [N]
    map_s = time.perf_counter() - t0
    test = category.test
    metrics = compute_metrics(scores, test.labels, maps if test.has_masks else None, test.masks)
    return Evaluation(metrics, scores, maps, {"map_s": map_s})


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_method(
    method: str | Method,
    category: ADCategory,
    train_feats: torch.Tensor,
    test_feats: torch.Tensor,
    budget: TrainBudget,
    cfg: object | None = None,
) -> Evaluation:
    """Fit ``method`` (a name of ``METHODS``) on ``train_feats``, score ``test_feats``, evaluate; timed.

    ``cfg`` defaults to the method's config with the paper's defaults. A method that learns from
    subclass labels gets ``category.train.subclasses`` (None where the category has none).
    """
    spec = METHODS[method] if isinstance(method, str) else method
    cfg = spec.config() if cfg is None else cfg
    extra = {"subclasses": category.train.subclasses} if spec.needs_subclasses else {}
    t0 = time.perf_counter()
    model = spec.fit(train_feats, cfg, budget, **extra)
    _sync(budget.device)
    t1 = time.perf_counter()
    patch_scores = model.score(test_feats)  # [N, h, w]
    _sync(budget.device)
    t2 = time.perf_counter()
    ev = evaluate_patch_scores(category, patch_scores)
    ev.timings.update({"fit_s": t1 - t0, "score_s": t2 - t1})
    ev.model = model
    return ev


# ----------------------------------------------------------------------------- per subclass
SUBCLASS_METRICS = ("I-AUROC", "P-AUROC")


def subclass_metrics(
    category: ADCategory, scores: np.ndarray, maps: np.ndarray | None = None
) -> list[dict[str, object]]:
    """One row per test subclass: its name, whether it was seen in training, image counts, I-AUROC, P-AUROC.

    I-AUROC ranks the subclass's anomalous images against its normal ones by ``scores: [N]``;
    P-AUROC ranks the pixels of the subclass's test maps ``[N, S, S]`` against their masks (NaN
    without masks). A subclass lacking normal or anomalous test images gets NaN I-AUROC.
    """
    test = category.test
    if test.subclasses is None or category.subclass_names is None:
        raise ValueError(f"{category.key} has no subclass labels")
    scores = np.asarray(scores)
    rows = []
    for k, name in enumerate(category.subclass_names):
        idx = np.flatnonzero(test.subclasses == k)
        if len(idx) == 0:
            continue
        labels = test.labels[idx]
        row: dict[str, object] = {
            "subclass": name,
            "seen": name not in category.unseen_subclasses,
            "normal": int((labels == 0).sum()),
            "anomalous": int((labels == 1).sum()),
            "I-AUROC": ranking_metrics(scores[idx], labels)["AUROC"],
            "P-AUROC": float("nan"),
        }
        if maps is not None and test.masks is not None:
            row["P-AUROC"] = ranking_metrics(maps[idx], test.masks[idx])["AUROC"]
        rows.append(row)
    return rows


def subclass_means(rows: Sequence[dict[str, object]]) -> dict[str, float]:
    """Means of the per-subclass metrics over the unseen subclasses (the paper's "Average") and the seen ones.

    Keys: ``"unseen I-AUROC"``, ``"unseen P-AUROC"``, ``"seen I-AUROC"``, ``"seen P-AUROC"``.
    NaN entries are left out; a group without values gives NaN.
    """
    out = {}
    for group, seen in (("unseen", False), ("seen", True)):
        for m in SUBCLASS_METRICS:
            vals = [float(r[m]) for r in rows if bool(r["seen"]) == seen and not np.isnan(float(r[m]))]
            out[f"{group} {m}"] = float(np.mean(vals)) if vals else float("nan")
    return out


def overall_metrics(category: ADCategory, scores: np.ndarray, maps: np.ndarray | None = None) -> dict[str, float]:
    """I-AUROC and P-AUROC over the whole test split (all subclasses pooled)."""
    test = category.test
    out = {"I-AUROC": ranking_metrics(scores, test.labels)["AUROC"], "P-AUROC": float("nan")}
    if maps is not None and test.masks is not None:
        out["P-AUROC"] = ranking_metrics(maps, test.masks)["AUROC"]
    return out
