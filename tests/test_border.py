"""The border criterion: known answers on hand-made score grids, the tie rule, a held-out split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from adlib.border import SPREAD, border_criterion, choose, holdout
from adlib.data import ADCategory, ADSplit


def test_border_criterion_by_hand() -> None:
    s = torch.zeros(4, 4, 4)
    s[0, 0, 0] = 5.0  # image 0: highest in the ring
    s[1, 1, 1] = 5.0  # image 1: highest inside
    s[2, 0, 3], s[2, 2, 2] = 5.0, 5.0  # image 2: a tie counts as inside (not strictly higher in the ring)
    s[3, 3, 1] = 7.0  # image 3: ring
    c = border_criterion(s + 1.0, 16)
    assert c["max in ring (%)"] == 50.0
    assert c["ring area (%)"] == pytest.approx(100 * 12 / 16)
    assert c["border bias (points)"] == pytest.approx(25.0)
    assert c[SPREAD] > 0


def test_normal_spread_is_in_units_of_the_patch_sd() -> None:
    """Constant maps: each image's score is its value, so the image scores spread exactly like the patches (1.0)."""
    values = torch.tensor([0.5, -1.0, 2.0, 3.5])
    s = values.view(4, 1, 1).expand(4, 8, 8).clone()
    assert border_criterion(s, 32)[SPREAD] == pytest.approx(1.0, rel=1e-5)
    # shift and scale free, and defined for scores centred on 0 (the coefficient of variation was not)
    rng = torch.Generator().manual_seed(0)
    r = torch.randn(6, 8, 8, generator=rng)
    r = r - r.mean()
    base = border_criterion(r, 32)[SPREAD]
    assert 0 < base < 1  # an image score (a max of a smoothed map) varies less than single patches
    assert border_criterion(3.0 * r - 10.0, 32)[SPREAD] == pytest.approx(base, rel=1e-5)


def test_choose_prefers_low_bias_then_low_spread() -> None:
    t = pd.DataFrame(
        {
            "option": ["a", "b", "c", "a", "b", "c"],
            "border bias (points)": [10.0, 3.0, 4.0, 10.0, 3.0, 4.5],
            SPREAD: [1.0, 9.0, 5.0, 1.0, 9.0, 5.0],
        }
    )
    assert choose(t) == "c"  # b has the smallest bias, c is within 2 points and spreads less
    assert choose(t.assign(**{"border bias (points)": [10.0, 1.0, 4.0, 10.0, 1.0, 4.5]})) == "b"


def test_holdout_is_disjoint_seeded_and_covers_the_train_split() -> None:
    split = ADSplit(np.zeros((10, 4, 4, 3), np.uint8), np.zeros(10, np.int64), None, ["good"] * 10, list("abcdefghij"))
    cat = ADCategory("toy", "c", split, split, "test")
    fit, out = holdout(cat, 0.2, seed=1)
    assert len(out) == 2 and len(fit) == 8 and not set(fit) & set(out)
    assert sorted([*fit, *out]) == list(range(10))
    assert np.array_equal(out, holdout(cat, 0.2, seed=1)[1]) and not np.array_equal(out, holdout(cat, 0.2, seed=2)[1])
