"""Issue 9, case 1: NaN or infinite scores are refused with one line (how many values, which images).

Before, a NaN image score sorted as the highest (I-AUROC 0.75 became 1.0), one NaN patch spread
through the blur over most of its map, all-NaN scores gave plausible numbers and all-NaN maps a
cryptic numpy error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adlib.maps import check_finite, image_scores, maps_and_scores, to_anomaly_map
from adlib.metrics import aupro, compute_metrics, ranking_metrics


def test_a_nan_image_score_is_refused_not_ranked_highest() -> None:
    scores = np.array([0.2, 0.9, np.nan, 0.5])
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"^image scores: 1 of 4 values are not finite \(NaN at images \[2\]\)$"):
        compute_metrics(scores, labels)


def test_all_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match=r"4 of 4 values are not finite \(NaN at images \[0, 1, 2, 3\]\)"):
        ranking_metrics(np.full(4, np.nan), np.array([0, 1, 0, 1]))


def test_non_finite_maps_name_the_images_and_the_kind() -> None:
    maps = np.zeros((3, 16, 16), np.float32)
    maps[1] = np.nan
    maps[2, 0, 0] = np.inf
    masks = np.zeros((3, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    expected = r"^anomaly maps: 257 of 768 values are not finite \(NaN at images \[1\]; \+inf at images \[2\]\)$"
    with pytest.raises(ValueError, match=expected):
        aupro(maps, masks)
    with pytest.raises(ValueError, match=expected):
        compute_metrics(np.zeros(3), np.array([0, 1, 1]), maps, masks)


def test_all_nan_maps_give_a_clear_error_not_a_numpy_one() -> None:
    maps = np.full((2, 8, 8), np.nan, np.float32)
    masks = np.zeros((2, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    with pytest.raises(ValueError, match=r"anomaly maps: 128 of 128 values are not finite \(NaN at images \[0, 1\]\)"):
        aupro(maps, masks)


def test_a_nan_patch_is_refused_before_the_blur_spreads_it() -> None:
    patches = torch.zeros(2, 8, 8)
    patches[1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^patch scores: 1 of 128 values are not finite \(NaN at images \[1\]\)$"):
        to_anomaly_map(patches, 32)
    with pytest.raises(ValueError, match="patch scores"):
        maps_and_scores(patches.numpy(), 32)
    with pytest.raises(ValueError, match=r"anomaly maps: .*-inf at images \[0\]"):
        image_scores(np.full((1, 4, 4), -np.inf))


def test_many_bad_images_are_listed_briefly() -> None:
    values = np.full(25, np.nan)
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\] \(25 images\)\)$"):
        check_finite(values, "image scores")
    check_finite(np.arange(3), "integers")  # integers and finite floats pass
    check_finite(torch.ones(2, 2), "a tensor")
