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

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import cached, digest, entry_path
from .data import ADCategory
from .features import FeatureExtractor, cached_features
from .maps import DEFAULT_SIGMA, maps_and_scores
from .methods import METHODS, Method
from .methods.base import TrainBudget
from .metrics import compute_metrics, ranking_metrics
from .training import world


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


def feature_key(category: ADCategory, extractor: FeatureExtractor, split: str = "train") -> str:
    """A short hash of what a split's features are made of: data set, image content, backbone, layers, size, and
    the aggregation applied on reading (patch size, padding), so that models fit on other paddings never collide."""
    images = category.train if split == "train" else category.test
    cfg = extractor.config
    return digest(
        {**extractor.cache_key(images, category.key, split), "patch_size": cfg.patch_size, "padding": cfg.padding}
    )


def model_key(spec: Method, cfg: object, budget: TrainBudget, data_key: str, extra: dict[str, object]) -> dict:
    """The model cache key: everything that determines the trained model (see :func:`fit_cached`)."""
    key = {
        "method": spec.name,
        "cfg": repr(spec.trained_config(cfg)),
        "budget": [budget.steps, budget.patches_per_step, budget.router_steps, budget.router_batch, budget.seed],
        "data": data_key,
        "extra": {k: digest(v) if isinstance(v, np.ndarray | torch.Tensor) else repr(v) for k, v in extra.items()},
    }
    rule = [budget.holdout, budget.eval_every, budget.patience, budget.min_delta]
    if rule != [0.0, 0, 0, 0.0]:  # only where set: the keys of models trained before these existed stay valid
        key["stop rule"] = rule
    return key


def fit_cached(
    method: str | Method,
    train_feats: torch.Tensor,
    cfg: object,
    budget: TrainBudget,
    *,
    data_key: str,
    **extra: object,
) -> Any:
    """``METHODS[method].fit(train_feats, cfg, budget, **extra)``, kept in the model cache (``adlib.cache``).

    The key is everything that determines the model: the method, the trained part of its config
    (``repr``; test-time switches are applied after loading), the budget's training lengths and seed,
    its held-out and stopping rule where set, ``data_key`` (:func:`feature_key` of the training split)
    and the extra arguments (arrays by content). Device, progress bars and checkpointing are not part of it.

    While it trains, the model's checkpoints live in ``<entry>.ckpt/`` beside its cache entry
    (``adlib.training``), every ``budget.checkpoint_every`` steps and on SIGINT / SIGTERM: calling
    ``fit_cached`` again after an interruption goes on from there. The folder is removed once the entry is
    written.
    """
    spec = METHODS[method] if isinstance(method, str) else method
    key = model_key(spec, cfg, budget, data_key, extra)
    ckpt = checkpoint_dir(key)
    run = replace(budget, checkpoint=str(ckpt))
    rank0 = world()[0] == 0  # under torchrun every rank trains, rank 0 writes the entry
    trained = spec.trained_config(cfg)
    model = cached(
        "models", key, lambda: spec.fit(train_feats, trained, run, **extra), map_location=budget.device, store=rank0
    )
    if rank0:
        shutil.rmtree(ckpt, ignore_errors=True)  # the model is in the cache: its checkpoints are done with
    return spec.with_test_time(model, cfg)


def checkpoint_dir(key: dict) -> Path:
    """The checkpoint folder of the model cache entry of ``key``: ``<entry>.ckpt``."""
    return entry_path("models", key).with_suffix(".ckpt")


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
    data_key: str | None = None,
) -> Evaluation:
    """Fit ``method`` (a name of ``METHODS``) on ``train_feats``, score ``test_feats``, evaluate; timed.

    ``cfg`` defaults to the method's config with the paper's defaults. A method that learns from
    subclass labels gets ``category.train.subclasses`` (None where the category has none). With a
    ``data_key`` (:func:`feature_key`) the fitted model comes from the model cache when it is there
    (:func:`fit_cached`; ``fit_s`` is then the time to load it).
    """
    spec = METHODS[method] if isinstance(method, str) else method
    cfg = spec.config() if cfg is None else cfg
    extra = {"subclasses": category.train.subclasses} if spec.needs_subclasses else {}
    t0 = time.perf_counter()
    if data_key is None:
        model = spec.fit(train_feats, cfg, budget, **extra)
    else:
        model = fit_cached(spec, train_feats, cfg, budget, data_key=data_key, **extra)
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


def probe_accuracy(feats: torch.Tensor, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """How separable classes are: mean cross-validated accuracy of a linear probe on GAP features.

    ``feats: [N, C, h, w]`` (global-average-pooled here) or ``[N, C]``; a standardised logistic
    regression, stratified ``folds``-fold cross-validation. Used on *training* images only, to fix the
    strength of the subtle texture_shift variant (``adlib.data.synthetic.shift.SUBTLE_STRENGTH``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = feats.mean(dim=(2, 3)) if feats.ndim == 4 else feats  # [N, C]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, x.numpy(), np.asarray(labels), cv=cv).mean())


def evaluate_subclasses(
    category: ADCategory, patch_scores: torch.Tensor | np.ndarray
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Patch scores [N, h, w] of the test split -> per-subclass rows and their seen / unseen means.

    The post-processing of `adlib.maps` (benchmark convention), then :func:`subclass_metrics` and
    :func:`subclass_means`: the paper's protocol in one call.
    """
    maps, scores = maps_and_scores(patch_scores, category.image_size)  # [N, S, S], [N]
    rows = subclass_metrics(category, scores, maps)
    return rows, subclass_means(rows)
