"""AnomalyMoE's components on the built-in tray scenes (``make_logical``): parts found, and changed by logical defects.

The scenes' pixels (RGB, 4x4-averaged to 32x32 positions) stand in for backbone features, so that the
test needs no backbone. ``defects=False`` draws the very same scenes without their defect.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adlib.data.synthetic import make_logical
from adlib.methods import components as comp

pytestmark = pytest.mark.usefixtures("one_thread")


def pixels(images) -> torch.Tensor:
    """uint8 ``[N, S, S, 3]`` -> ``[N, 3, S/4, S/4]`` in [0, 1]."""
    return F.avg_pool2d(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, 4)


def test_tray_components_follow_the_parts() -> None:
    bad = make_logical(128, 6, 0, 6, seed=1)  # test kinds: extra, missing, swapped, dent, wrong_color, scratch
    good = make_logical(128, 6, 0, 6, seed=1, defects=False)
    kinds = [name.split("/")[-2] for name in bad.test.names]
    train = pixels(bad.train.images)  # [6, 3, 32, 32]
    centres = comp.fit_centres(train, k=5, seed=0)
    torch.testing.assert_close(centres, comp.fit_centres(train, k=5, seed=0))  # deterministic by seed
    per_image = torch.bincount(comp.components_of(train, centres).owner, minlength=6)
    assert (per_image == 6).all()  # 7 parts, two of them (the red discs, one cluster) touch

    def found(split, kind: str) -> comp.Components:
        i = kinds.index(kind)
        return comp.components_of(pixels(split.test.images[i : i + 1]), centres)

    assert len(found(bad, "missing")) == len(found(good, "missing")) - 1  # the green square at (0.81, 0.18)
    assert len(found(bad, "extra")) == len(found(good, "extra")) + 1
    changed, same = found(bad, "wrong_color"), found(good, "wrong_color")
    assert len(changed) != len(same) or not torch.equal(changed.cluster, same.cluster)
