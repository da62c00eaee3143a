"""Anomaly maps: upsampling, smoothing, image scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adlib.maps import DEFAULT_SIGMA, image_scores, maps_and_scores, to_anomaly_map


def test_maps_and_scores_shapes() -> None:
    maps, scores = maps_and_scores(torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4), 16)
    assert maps.shape == (2, 16, 16) and scores.shape == (2,)
    assert scores[1] > scores[0]


def test_post_processing() -> None:
    patch = np.zeros((2, 4, 4), dtype=np.float32)
    patch[1, 1, 1] = 1.0
    maps = to_anomaly_map(patch, 32, sigma=4)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps[0].max() == 0 and maps[1].max() > 0
    assert np.unravel_index(maps[1].argmax(), (32, 32)) in {(y, x) for y in range(8, 16) for x in range(8, 16)}
    flat = np.arange(200, dtype=np.float32).reshape(2, 10, 10)
    assert np.allclose(image_scores(flat, "max"), [99, 199])
    assert np.allclose(image_scores(flat, "top1"), [99, 199])  # 1 % of 100 pixels = 1 pixel
    with pytest.raises(ValueError, match="mode"):
        image_scores(flat, "mean")


def test_default_sigma_is_the_benchmark_convention() -> None:
    patch = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    assert DEFAULT_SIGMA == 4.0
    assert np.array_equal(to_anomaly_map(patch, 32), to_anomaly_map(patch, 32, sigma=4.0))
    assert not np.array_equal(to_anomaly_map(patch, 32), to_anomaly_map(patch, 32, sigma=2.0))
