"""Anomaly maps: from patch scores to maps and image scores, one definition and one default sigma.

The benchmark code used by MambaAD and DVAD (../shared/papers/README.md): patch scores are upsampled
to the image size (256 px in the papers), smoothed with a Gaussian of sigma 4 (``DEFAULT_SIGMA``),
and the image score is the maximum of the map; AnomalyMoE takes the mean of the top 1 % of pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIGMA = 4.0  # Gaussian smoothing of the upsampled map, in pixels (the benchmark convention)


def to_anomaly_map(
    patch_scores: torch.Tensor | np.ndarray, image_size: int, sigma: float = DEFAULT_SIGMA
) -> np.ndarray:
    """Patch scores [N, h, w] -> anomaly maps [N, S, S]: bilinear upsampling, then a Gaussian blur.

    sigma=4 (truncated at 4 sigma) is the benchmark convention; sigma=0 skips the blur.
    """
    s = torch.as_tensor(patch_scores, dtype=torch.float32)
    if s.ndim != 3:
        raise ValueError(f"patch_scores must be [N, h, w], got shape {tuple(s.shape)}")
    up = F.interpolate(s[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    maps = up[:, 0].numpy()  # [N, S, S]
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=sigma, axes=(1, 2))
    return maps.astype(np.float32, copy=False)


def image_scores(maps: np.ndarray, mode: str = "max", top_fraction: float = 0.01) -> np.ndarray:
    """Image score from each map [N, S, S] -> [N]: `max`, or `top1` = mean of the top 1 % of pixels."""
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
