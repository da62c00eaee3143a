"""Small plotting helpers shared by the notebooks (matplotlib only; return the Figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from .data import ADSplit


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a boolean mask [H, W]."""
    return mask & ~ndimage.binary_erosion(mask)


def show(
    ax: plt.Axes,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    amap: np.ndarray | None = None,
    title: str = "",
    vmax: float | None = None,
) -> None:
    """An image, optionally with an anomaly map on top (jet, 50 %) and the mask outline in white."""
    ax.imshow(image)
    if amap is not None:
        ax.imshow(amap, cmap="jet", alpha=0.5, vmin=float(np.min(amap)) if vmax is None else 0, vmax=vmax)
    if mask is not None and mask.any():
        edge = np.zeros((*mask.shape, 4))
        edge[mask_outline(mask)] = (1, 1, 1, 1)
        ax.imshow(edge)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def examples(split: ADSplit, per_type: int = 1, seed: int = 0) -> list[int]:
    """Indices of `per_type` images of every defect type (normal first), seeded."""
    rng = np.random.default_rng(seed)
    out = []
    types = ["good"] + sorted({t for t in split.defect_types if t != "good"})
    for t in types:
        idx = [i for i, d in enumerate(split.defect_types) if d == t]
        out += list(rng.choice(idx, size=min(per_type, len(idx)), replace=False))
    return [int(i) for i in out]


def grid(
    split: ADSplit,
    index: list[int],
    maps: np.ndarray | None = None,
    ncols: int = 6,
    size: float = 1.9,
    titles: list[str] | None = None,
) -> plt.Figure:
    """Images of `split` at `index` with mask outlines (and maps if given) in a grid."""
    nrows = int(np.ceil(len(index) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    vmax = float(np.max(maps[index])) if maps is not None else None
    for k, ax in enumerate(axes.flat):
        if k >= len(index):
            ax.axis("off")
            continue
        i = index[k]
        mask = split.masks[i] if split.masks is not None else None
        show(
            ax,
            split.images[i],
            mask,
            None if maps is None else maps[i],
            titles[k] if titles else split.defect_types[i],
            vmax,
        )
    fig.tight_layout()
    return fig
