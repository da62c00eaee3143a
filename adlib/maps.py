"""Anomaly maps: from patch scores to maps and image scores, one definition and one default sigma.

The benchmark code used by MambaAD (He et al., 2024) and DVAD (2025): patch scores are upsampled
to the image size (256 px in the papers), smoothed with a Gaussian of sigma 4 (``DEFAULT_SIGMA``),
and the image score is the maximum of the map; AnomalyMoE takes the mean of the top 1 % of pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIGMA = 4.0  # Gaussian smoothing of the upsampled map, in pixels (the benchmark convention)
_SHOWN = 10  # image indices listed in a non-finite error before "..."


def _indices(rows: np.ndarray) -> str:
    """``[2, 5]``, or the first few and a count: ``[0, 1, ..., 9, ...] (25 images)``."""
    shown = ", ".join(str(int(i)) for i in rows[:_SHOWN])
    return f"[{shown}]" if len(rows) <= _SHOWN else f"[{shown}, ...] ({len(rows)} images)"


def check_finite(values: torch.Tensor | np.ndarray, what: str) -> None:
    """Refuse NaN and +-inf: one line naming how many values and which images (the first axis).

    A NaN sorts as the highest score (I-AUROC 0.75 becomes 1.0) and a blur spreads one NaN patch
    over most of a map, so scores are checked before they are ranked or smoothed. ``values`` is
    ``[N, ...]`` with one image per row; a scalar counts as one image.
    """
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.dtype.kind not in "fc" or np.isfinite(a).all():  # integers and booleans are always finite
        return
    rows = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)  # [N, values per image]
    found = []
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        hit = np.flatnonzero(test(rows).any(axis=1))  # images holding at least one such value
        if len(hit):
            found.append(f"{name} at images {_indices(hit)}")
    n_bad = int((~np.isfinite(rows)).sum())
    raise ValueError(f"{what}: {n_bad} of {rows.size} values are not finite ({'; '.join(found)})")


def to_anomaly_map(
    patch_scores: torch.Tensor | np.ndarray, image_size: int, sigma: float = DEFAULT_SIGMA
) -> np.ndarray:
    """Patch scores [N, h, w] -> anomaly maps [N, S, S]: bilinear upsampling, then a Gaussian blur.

    sigma=4 (truncated at 4 sigma) is the benchmark convention; sigma=0 skips the blur. Non-finite
    patch scores are refused here, before the blur spreads one NaN over most of the map.
    """
    s = torch.as_tensor(patch_scores, dtype=torch.float32)
    if s.ndim != 3:
        raise ValueError(f"patch_scores must be [N, h, w], got shape {tuple(s.shape)}")
    check_finite(s, "patch scores")
    up = F.interpolate(s[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    maps = up[:, 0].numpy()  # [N, S, S]
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=sigma, axes=(1, 2))
    return maps.astype(np.float32, copy=False)


def image_scores(maps: np.ndarray, mode: str = "max", top_fraction: float = 0.01) -> np.ndarray:
    """Image score from each map [N, S, S] -> [N]: `max`, or `top1` = mean of the top 1 % of pixels."""
    check_finite(maps, "anomaly maps")
    flat = maps.reshape(len(maps), -1)  # [N, S*S]
    if mode == "max":
        return flat.max(axis=1)
    if mode == "top1":
        k = max(1, int(round(flat.shape[1] * top_fraction)))
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
    raise ValueError(f"mode must be 'max' or 'top1', got {mode!r}")


def maps_and_scores(
    patch_scores: torch.Tensor | np.ndarray, image_size: int, sigma: float = DEFAULT_SIGMA, score_mode: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """Patch scores [N, h, w] -> anomaly maps [N, S, S] and image scores [N] (benchmark post-processing)."""
    maps = to_anomaly_map(patch_scores, image_size, sigma)  # [N, S, S]
    return maps, image_scores(maps, score_mode)  # [N, S, S], [N]
