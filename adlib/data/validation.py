"""A validation split made from training normals only: held-out normals, and synthetic anomalies drawn on them.

Every choice (a decoder's widths, a loss, a step count, a threshold) is made on training data by a rule written
down first; test numbers are reported, never used to choose. :func:`validation_split` holds out a fraction of a
category's normal *training* images and returns ``(fit, val)``: the model fits on ``fit``; ``val`` holds each
held-out image twice, once as it is (``"good"``) and once with one synthetic defect and its pixel mask, so that
a detection criterion (I-AUROC, P-AUROC) can be measured without a test image. The defect kinds cycle over the
held-out images:

- ``cut_paste``: a blob-shaped piece of another held-out image pasted at a random place (CutPaste, Li et al.,
  CVPR 2021, with a soft blob instead of a rectangle);
- ``noise``: Gaussian noise (sd 40 grey levels) inside a blob;
- ``colour``: the blob's colour channels rolled (R, G, B -> G, B, R) and its brightness scaled by 0.6-1.4;
- ``blur``: the blob replaced by a Gaussian blur (sigma 3 px) of the image.

Blobs cover ``area`` (0.5-3 %) of the image, with a 2-px soft edge; the mask is ``alpha >= 0.5``, as in the built-in
sets (``adlib.data.synthetic.draw``). None of this resembles the real defects in particular, which is the point:
a criterion that rewards detecting *some* local change, not the test set's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .container import ADSplit
from .synthetic.draw import Stroke, apply_stroke, blob_shape

KINDS = ("cut_paste", "noise", "colour", "blur")
AREA = (0.005, 0.03)  # fraction of the image a defect covers
SOFT_PX = 2.0  # width of the blending ramp


def synthetic_defect(img: np.ndarray, other: np.ndarray, kind: str, rng: np.random.Generator) -> tuple:
    """``(image with one defect of kind, mask)``: ``img``, ``other`` ``[S, S, 3]`` uint8 -> uint8, bool ``[S, S]``."""
    size = img.shape[0]
    box, alpha, _ = blob_shape(size, rng, rng.uniform(*AREA), SOFT_PX)
    base = img.astype(np.float32)  # [S, S, 3]
    region = base[box]  # [h, w, 3]
    if kind == "cut_paste":
        h, w = region.shape[:2]
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        patch = other[y : y + h, x : x + w].astype(np.float32)
    elif kind == "noise":
        patch = region + rng.normal(0, 40, region.shape).astype(np.float32)
    elif kind == "colour":
        patch = np.roll(region, 1, axis=2) * rng.uniform(0.6, 1.4)
    elif kind == "blur":
        patch = ndimage.gaussian_filter(base, sigma=(3, 3, 0))[box]
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mask = np.zeros((size, size), dtype=bool)
    apply_stroke(base, mask, Stroke(box, alpha, patch.astype(np.float32)))
    return np.clip(np.round(base), 0, 255).astype(np.uint8), mask


def validation_split(train: ADSplit, fraction: float = 0.1, seed: int = 0) -> tuple[ADSplit, ADSplit]:
    """``(fit, val)`` from normal training images (see the module docstring); deterministic by ``seed``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if np.any(train.labels != 0):
        raise ValueError("train: a validation split is made from normal training images only")
    n = len(train)
    m = round(fraction * n)
    if not 2 <= m <= n - 2:
        raise ValueError(f"fraction={fraction} of {n} training images holds out {m}: need 2 .. {n - 2}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    held, kept = np.sort(perm[:m]), np.sort(perm[m:])
    good = train.subset(held)
    images, masks, kinds = [], [], []
    for i in range(m):
        kind = KINDS[i % len(KINDS)]
        img, mask = synthetic_defect(good.images[i], good.images[(i + 1) % m], kind, rng)
        images.append(img)
        masks.append(mask)
        kinds.append(kind)
    size = train.image_size
    val = ADSplit(
        images=np.concatenate([good.images, np.stack(images)]),
        labels=np.r_[np.zeros(m, np.int64), np.ones(m, np.int64)],
        masks=np.concatenate([np.zeros((m, size, size), bool), np.stack(masks)]),
        defect_types=["good"] * m + kinds,
        names=good.names + [f"{name}+{k}" for name, k in zip(good.names, kinds, strict=True)],
        subclasses=None if good.subclasses is None else np.r_[good.subclasses, good.subclasses],
    )
    return train.subset(kept), val
