"""The validation split of training normals (adlib.data.validation): disjoint, seeded, one defect per copy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from adlib.data import ADSplit
from adlib.data.validation import KINDS, synthetic_defect, validation_split


def normals(n: int = 20, size: int = 48, seed: int = 0) -> ADSplit:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    checker = ((yy // 3 + xx // 3) % 2 * 60)[..., None]  # fine texture: a blur must show
    base = (np.stack([xx, yy, xx + yy], -1) * 2 % 140 + 20 + checker).astype(np.uint8)  # ramps + texture
    images = np.stack([np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(n)])
    return ADSplit(images, np.zeros(n, np.int64), None, ["good"] * n, [f"n{i}" for i in range(n)])


def test_the_split_is_disjoint_seeded_and_pairs_each_held_out_image_with_a_defect() -> None:
    train = normals()
    fit, val = validation_split(train, 0.2, seed=3)
    assert len(fit) == 16 and len(val) == 8
    assert set(fit.names).isdisjoint(val.names[:4]) and set(fit.names) | set(val.names[:4]) == set(train.names)
    assert val.labels.tolist() == [0] * 4 + [1] * 4 and val.defect_types[4:] == list(KINDS)
    assert not val.masks[:4].any() and all(m.sum() > 0 for m in val.masks[4:])
    again = validation_split(train, 0.2, seed=3)[1]
    assert np.array_equal(again.images, val.images) and np.array_equal(again.masks, val.masks)
    assert validation_split(train, 0.2, seed=4)[1].names != val.names or not np.array_equal(
        validation_split(train, 0.2, seed=4)[1].images, val.images
    )


@pytest.mark.parametrize("kind", KINDS)
def test_each_defect_changes_the_image_inside_its_mask_only(kind: str) -> None:
    train = normals(2)
    img, other = train.images[0], train.images[1][::-1].copy()  # another image that differs from img
    out, mask = synthetic_defect(img, other, kind, np.random.default_rng(1))
    diff = np.abs(out.astype(int) - img.astype(int)).max(axis=2)  # [S, S]
    near = ndimage.binary_dilation(mask, iterations=3)  # the soft edge reaches a little beyond the mask
    assert diff[~near].max() == 0  # nothing changes away from the defect
    assert diff[mask].mean() > 5  # it is visible where the mask says


def test_bad_arguments_are_refused_by_name() -> None:
    train = normals(10)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        validation_split(train, 1.0)
    with pytest.raises(ValueError, match="holds out 1: need 2 .. 8"):
        validation_split(train, 0.1)
    bad = ADSplit(train.images, np.ones(10, np.int64), None, ["x"] * 10, train.names)
    with pytest.raises(ValueError, match="normal training images only"):
        validation_split(bad, 0.2)
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic_defect(train.images[0], train.images[1], "scratch", np.random.default_rng(0))
