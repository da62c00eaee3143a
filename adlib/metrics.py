"""The metrics of the multi-class AD benchmarks, computed from anomaly maps and image scores.

Conventions (those of the multi-class benchmark code used by MambaAD, He et al. 2024, and by DVAD, 2025):

* maps and image scores come from `adlib.maps` (upsampled, sigma 4, max);
* ground-truth masks are resized and binarised at 0.5 (done by the loaders in `adlib.data`);
* image metrics (I-AUROC, I-AP, I-F1max) come from image scores, pixel metrics (P-AUROC, P-AP,
  P-F1max, IoU-max) from all pixels of a class, AUPRO from the per-region overlap curve.

All ranking metrics are exact and vectorised: one sort of the negatives, one of the positives,
then `searchsorted`. The curves only change at positive scores, so AP, F1max and IoU-max are
evaluated there; AUROC is the Mann-Whitney statistic with ties counted one half. They agree with
scikit-learn to float precision (see tests/test_metrics.py) and are much faster on 10^7 pixels.

Non-finite scores are refused (:func:`adlib.maps.check_finite`): a NaN would sort as the highest
score and give a plausible, wrong number.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .maps import check_finite

METRIC_NAMES = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "IoU-max")


# ----------------------------------------------------------------------------- ranking metrics
def ranking_metrics(scores: np.ndarray, targets: np.ndarray, what: str = "scores") -> dict[str, float]:
    """AUROC, AP, F1max and IoU-max of `scores` against binary `targets` (any shape, flattened).

    IoU-max is max over thresholds of TP / (TP + FP + FN): the best achievable overlap of the
    thresholded map with the ground truth, over all pixels together. Non-finite scores raise a
    ValueError that starts with `what` and names the images (first axis) that hold them.
    """
    check_finite(scores, what)
    scores = np.asarray(scores).ravel()
    targets = np.asarray(targets).ravel().astype(bool)
    if scores.shape != targets.shape:
        raise ValueError(f"scores and targets differ in size: {scores.shape} vs {targets.shape}")
    pos = np.sort(scores[targets])  # [P] ascending
    neg = np.sort(scores[~targets])  # [Q] ascending
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        nan = float("nan")
        return {"AUROC": nan, "AP": nan, "F1max": nan, "IoU-max": nan}
    # Mann-Whitney: each positive beats the negatives below it, ties count one half.
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    auroc = float((below.sum() + 0.5 * ties.sum()) / (n_pos * n_neg))
    # Thresholds at the distinct positive scores, from high to low.
    thresholds = np.unique(pos)[::-1]
    tp = n_pos - np.searchsorted(pos, thresholds, side="left")  # positives >= t
    fp = n_neg - np.searchsorted(neg, thresholds, side="left")  # negatives >= t
    precision = tp / (tp + fp)
    recall = tp / n_pos
    ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    f1 = 2 * precision * recall / (precision + recall)
    iou = tp / (n_pos + fp)
    return {"AUROC": auroc, "AP": ap, "F1max": float(f1.max()), "IoU-max": float(iou.max())}


# ----------------------------------------------------------------------------- AUPRO
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True  # 8-connectivity inside each image, never across images


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by `fpr_limit`.

    PRO(t) is the mean, over all connected ground-truth regions (8-connectivity) of all images, of
    the fraction of the region's pixels with score >= t; FPR(t) is the fraction of normal pixels
    (mask == 0, in all images) with score >= t. The curve is traced at every distinct threshold,
    integrated with the trapezoid rule from FPR 0 up to `fpr_limit`, with linear interpolation at
    `fpr_limit`, and normalised to [0, 1].

    The curve only needs the thresholds where PRO changes (the anomalous pixels' scores) plus the
    normal pixels counted above each of them: the normal scores above the `fpr_limit` quantile are
    sorted once and counted with `searchsorted`. The result equals the brute-force curve over all
    distinct pixel values (tests/test_metrics.py).
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks).astype(bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    check_finite(maps, "anomaly maps")
    regions, n_regions = ndimage.label(masks, structure=_IN_PLANE_8)  # [N, H, W] int
    neg = maps[~masks]  # [Q]
    n_neg = len(neg)
    if n_regions == 0 or n_neg == 0:
        return float("nan")

    # Normal pixels: keep the k+1 largest, k = floor(limit * Q); t_star is the smallest of them.
    k = min(int(math.floor(fpr_limit * n_neg)), n_neg - 1)
    top = np.sort(np.partition(neg, n_neg - k - 1)[n_neg - k - 1 :])  # [k+1] ascending
    t_star = top[0]
    n_ge_star = int(np.count_nonzero(neg >= t_star))  # ties of t_star may lie outside `top`

    # Anomalous pixels: weight 1 / (R * |region|), so that summing weights above t gives PRO(t).
    region_of = regions[masks]  # [P] in 1..R
    sizes = np.bincount(region_of, minlength=n_regions + 1).astype(np.float64)
    pos = maps[masks]
    keep = pos >= t_star
    pos, weight = pos[keep], 1.0 / (n_regions * sizes[region_of[keep]])
    order = np.argsort(-pos, kind="stable")
    pos, weight = pos[order], weight[order]  # descending scores
    u, first = np.unique(-pos, return_index=True)  # distinct values, descending as -u ascending
    u = -u
    pro_ge = np.cumsum(weight)[np.r_[first[1:], len(pos)] - 1] if len(pos) else np.zeros(0)
    pro_gt = np.r_[0.0, pro_ge[:-1]] if len(pro_ge) else np.zeros(0)  # no defect pixel reaches t_star: PRO 0
    # Normal pixels strictly above / at least each value (all such values are >= t_star).
    fpr_gt = (len(top) - np.searchsorted(top, u, side="right")) / n_neg
    fpr_ge = (len(top) - np.searchsorted(top, u, side="left")) / n_neg
    fpr_ge[u == t_star] = n_ge_star / n_neg  # ties of t_star outside `top` count too
    pro_star = pro_ge[-1] if len(pro_ge) else 0.0

    # Curve: (0,0), then for each value the point just above it and at it, then t_star.
    x = np.concatenate([[0.0], np.column_stack([fpr_gt, fpr_ge]).ravel(), [n_ge_star / n_neg]])
    y = np.concatenate([[0.0], np.column_stack([pro_gt, pro_ge]).ravel(), [pro_star]])
    return _area_up_to(x, y, fpr_limit) / fpr_limit


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under a polyline with non-decreasing x, cut at x = limit (interpolated)."""
    inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:inside], y[:inside]
    if inside < len(x) and xs[-1] < limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))


# ----------------------------------------------------------------------------- all together
def compute_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics of one class. Pixel metrics are NaN (undefined, not zero) without masks.

    Non-finite image scores or maps raise a ValueError naming how many values and which images.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must match")
    img = ranking_metrics(scores, labels, "image scores")
    out = {"I-AUROC": img["AUROC"], "I-AP": img["AP"], "I-F1max": img["F1max"]}
    nan = float("nan")
    if maps is None or masks is None:
        out.update({"P-AUROC": nan, "P-AP": nan, "P-F1max": nan, "AUPRO": nan, "IoU-max": nan})
        return out
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape")
    pix = ranking_metrics(maps, masks, "anomaly maps")
    out.update({"P-AUROC": pix["AUROC"], "P-AP": pix["AP"], "P-F1max": pix["F1max"]})
    out["AUPRO"] = aupro(maps, masks, fpr_limit)
    out["IoU-max"] = pix["IoU-max"]
    return out


def with_mean(rows: list[dict[str, object]], key: str = "category") -> list[dict[str, object]]:
    """Append a 'mean' row: the class mean of every metric (the papers' mAU-ROC etc.).

    NaN entries (undefined metrics, such as pixel metrics without masks) are left out of the mean.
    """
    if not rows:
        return rows
    mean: dict[str, object] = {k: "" for k in rows[0]}
    mean[key] = "mean"
    for name in METRIC_NAMES:
        vals = [float(r[name]) for r in rows if name in r and not np.isnan(float(r[name]))]  # type: ignore[arg-type]
        if name in rows[0]:
            mean[name] = float(np.mean(vals)) if vals else float("nan")
    return [*rows, mean]
