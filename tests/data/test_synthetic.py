"""Built-in generated data: shapes, determinism, masks that cover exactly the drawn defects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from adlib.config import get_profile
from adlib.data import ADCategory
from adlib.data.synthetic import (
    BUILTIN_SETS,
    LOGICAL_DEFECTS,
    STRUCTURAL_DEFECTS,
    TEXTURE_DEFECTS,
    TEXTURES,
    make_builtin,
    make_logical,
    make_texture_shift,
    make_textures,
)

S = 64  # small but large enough for every defect to have a visible core


def generate(kind: str, seed: int = 0, defects: bool = True, size: int = S) -> list[ADCategory]:
    if kind == "textures":
        return make_textures(size, 3, 2, 10, seed=seed, defects=defects)
    if kind == "texture_shift":
        return [make_texture_shift(size, 2, 1, 2, seed=seed, defects=defects)]
    return [make_logical(size, 3, 2, 12, seed=seed, defects=defects)]


@pytest.fixture(scope="module", params=BUILTIN_SETS)
def pair(request) -> tuple[list[ADCategory], list[ADCategory]]:
    """(generated set, its clean twin) for each built-in set."""
    return generate(request.param), generate(request.param, defects=False)


def test_shapes_dtypes_and_labels(pair):
    for cat in pair[0]:
        for split in (cat.train, cat.test):
            assert split.images.dtype == np.uint8 and split.images.shape[1:] == (S, S, 3)
            assert split.labels.dtype == np.int64
            assert all((d == "good") == (y == 0) for d, y in zip(split.defect_types, split.labels, strict=True))
            assert len(set(split.names)) == len(split)
        assert (cat.train.labels == 0).all() and cat.train.masks is None
        assert cat.test.masks is not None and cat.test.masks.shape == (len(cat.test), S, S)
        assert 0 < cat.test.labels.sum() < len(cat.test)
        assert cat.dataset.startswith("builtin-")


def test_masks_empty_for_normal_and_not_for_anomalous(pair):
    for cat in pair[0]:
        t = cat.test
        assert not t.masks[t.labels == 0].any()
        area = t.masks[t.labels == 1].mean(axis=(1, 2))  # fraction of the image
        assert (area > 0).all() and (area < 0.15).all(), area


def test_defects_change_exactly_the_masked_pixels(pair):
    """Against the clean twin: identical everywhere except the mask and its soft rim."""
    for cat, clean in zip(*pair, strict=True):
        np.testing.assert_array_equal(cat.train.images, clean.train.images)
        np.testing.assert_array_equal(cat.test.masks, clean.test.masks)
        t, c = cat.test, clean.test
        diff = np.abs(t.images.astype(int) - c.images.astype(int)).max(axis=3)  # [N, S, S]
        assert not diff[t.labels == 0].any()
        for i in np.flatnonzero(t.labels == 1):
            mask = t.masks[i]
            near = ndimage.binary_dilation(mask, iterations=6)  # the soft rim is narrower than this
            assert not diff[i][~near].any(), f"{t.names[i]} changed outside its mask"
            changed_inside = (diff[i][mask] > 4).mean()
            assert changed_inside > 0.5, f"{t.names[i]}: only {changed_inside:.0%} of the mask changed"


@pytest.mark.parametrize("kind", BUILTIN_SETS)
def test_deterministic_by_seed(kind):
    a, b, c = generate(kind, seed=3, size=32), generate(kind, seed=3, size=32), generate(kind, seed=4, size=32)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x.train.images, y.train.images)
        np.testing.assert_array_equal(x.test.images, y.test.images)
        np.testing.assert_array_equal(x.test.masks, y.test.masks)
        assert x.test.defect_types == y.test.defect_types
        assert not np.array_equal(x.test.images, z.test.images)
        assert not np.array_equal(x.train.images, z.train.images)


def test_train_images_do_not_depend_on_test_sizes():
    a = make_textures(32, 3, 1, 2, classes=["grass"])[0]
    b = make_textures(32, 3, 4, 7, classes=["grass"])[0]
    np.testing.assert_array_equal(a.train.images, b.train.images)


def test_textures_classes_and_defect_types():
    cats = make_textures(32, 2, 1, 10)
    assert len(cats) >= 4 and [c.category for c in cats] == [t.name for t in TEXTURES]
    for cat in cats:
        assert cat.dataset == "builtin-textures"
        assert set(cat.test.defect_types) == {"good", *TEXTURE_DEFECTS}
    assert [c.category for c in make_textures(32, 1, 1, 1, classes=["moon", "brick"])] == ["moon", "brick"]
    with pytest.raises(ValueError, match=r"'velvet'.*brick"):
        make_textures(32, 1, 1, 1, classes=["velvet"])


def test_texture_shift_subclasses():
    cat = make_texture_shift(32, 2, 1, 2)
    names = cat.subclass_names
    assert cat.dataset == "builtin-texture_shift" and len(names) >= 8
    assert len(cat.unseen_subclasses) == 3 and cat.unseen_subclasses == names[-3:]
    unseen = [names.index(u) for u in cat.unseen_subclasses]
    assert not np.isin(cat.train.subclasses, unseen).any()
    assert set(cat.train.subclasses.tolist()) == set(range(len(names) - 3))
    assert set(cat.test.subclasses.tolist()) == set(range(len(names)))
    assert len(cat.train) == 2 * 5 and len(cat.test) == 3 * 8  # sizes are per subclass
    for k in range(len(names)):  # every subclass has normal and defective test images
        assert set(cat.test.labels[cat.test.subclasses == k].tolist()) == {0, 1}
    # subclasses look different: their mean colours differ
    means = np.stack([cat.test.images[cat.test.subclasses == k].mean(axis=(0, 1, 2)) for k in range(len(names))])
    assert np.min([np.abs(means[i] - means[j]).max() for i in range(8) for j in range(i)]) > 3
    with pytest.raises(ValueError, match="n_unseen"):
        make_texture_shift(32, 1, 1, 1, n_subclasses=4, n_unseen=4)


def test_logical_has_every_anomaly_type():
    cat = make_logical(48, 2, 2, 12)
    assert (cat.dataset, cat.category) == ("builtin-logical", "tray")
    assert set(cat.test.defect_types) == {"good", *LOGICAL_DEFECTS, *STRUCTURAL_DEFECTS}
    for i, kind in enumerate(cat.test.defect_types):
        if kind == "swapped":  # both parts, old and new places: at least two regions
            assert ndimage.label(cat.test.masks[i])[1] >= 2


def test_make_builtin_uses_profile_sizes():
    profile = get_profile("ci", image_size=32, n_train=2, n_test_good=1, n_test_bad=2)
    cats = make_builtin("textures", profile)
    assert len(cats) == len(TEXTURES) and cats[0].train.images.shape == (2, 32, 32, 3) and len(cats[0].test) == 3
    (shift,) = make_builtin("texture_shift", profile)
    assert len(shift.test) == 3 * len(shift.subclass_names)
    (tray,) = make_builtin("logical", profile, seed=1)
    assert len(tray.train) == 2 and tray.image_size == 32
    with pytest.raises(ValueError, match=r"'carpets'.*textures.*texture_shift.*logical"):
        make_builtin("carpets", profile)
