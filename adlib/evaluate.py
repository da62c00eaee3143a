"""Glue between data, cached features, methods and metrics: what every notebook's experiment calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import ADCategory
from .features import FeatureExtractor, cached_features
from .metrics import compute_metrics, image_scores, to_anomaly_map
from .patchcore import PatchCore, PatchCoreConfig


@dataclass
class Evaluation:
    """Scores, maps and metrics of one method on one category's test split."""

    metrics: dict[str, float]
    scores: np.ndarray  # [N] image scores
    maps: np.ndarray  # [N, S, S] anomaly maps
    timings: dict[str, float] = field(default_factory=dict)  # seconds: fit, score, per image ...


def category_features(
    category: ADCategory, extractor: FeatureExtractor, cache_dir: str | Path | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached patch features of the train and test split: ([N_train, C, h, w], [N_test, C, h, w])."""
    train = cached_features(extractor, category.train, category.key, "train", cache_dir, progress)
    test = cached_features(extractor, category.test, category.key, "test", cache_dir, progress)
    return train, test


def maps_and_scores(
    category: ADCategory, patch_scores: torch.Tensor | np.ndarray, sigma: float = 4.0, score_mode: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """Patch scores [N, h, w] -> anomaly maps [N, S, S] and image scores [N] (benchmark post-processing)."""
    maps = to_anomaly_map(patch_scores, category.image_size, sigma)  # [N, S, S]
    return maps, image_scores(maps, score_mode)  # [N, S, S], [N]


def evaluate_patch_scores(
    category: ADCategory, patch_scores: torch.Tensor | np.ndarray, sigma: float = 4.0, score_mode: str = "max"
) -> Evaluation:
    """Patch scores [N, h, w] of the test split -> maps, image scores and all metrics."""
    t0 = time.perf_counter()
    maps, scores = maps_and_scores(category, patch_scores, sigma, score_mode)  # [N, S, S], [N]
    map_s = time.perf_counter() - t0
    test = category.test
    metrics = compute_metrics(scores, test.labels, maps if test.has_masks else None, test.masks)
    return Evaluation(metrics, scores, maps, {"map_s": map_s})


def run_patchcore(
    category: ADCategory,
    train_feats: torch.Tensor,
    test_feats: torch.Tensor,
    config: PatchCoreConfig = PatchCoreConfig(),
    device: str | torch.device = "auto",
    progress: bool = False,
) -> Evaluation:
    """Fit PatchCore on the train features, score the test features, evaluate."""
    t0 = time.perf_counter()
    model = PatchCore(config, device).fit(train_feats, progress)
    t1 = time.perf_counter()
    patch_scores = model.score(test_feats)
    t2 = time.perf_counter()
    ev = evaluate_patch_scores(category, patch_scores)
    ev.timings.update({"fit_s": t1 - t0, "score_s": t2 - t1, "memory_bank": float(len(model.memory_bank))})
    return ev
