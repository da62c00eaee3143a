"""Plots shared by the notebooks (matplotlib only; every function returns or draws on a Figure).

Conventions (README, "Conventions"):

* an anomaly map is drawn **beside** its image, never on top of it, in a perceptual colormap
  (``MAP_CMAP``) with **one colour scale per figure** and a colorbar that says what the colours mean;
* the ground-truth mask is outlined in a contrasting colour (``MASK_COLOR``) on the image and on the
  map, thickened so that a thin scratch stays visible;
* titles name what a reader needs (subclass, seen or unseen, defect type); axes are labelled, with
  units; projections say how much variance their axes explain.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from scipy import ndimage

from .data import ADCategory, ADSplit

MAP_CMAP = "inferno"  # perceptual, dark = normal, bright = anomalous
MASK_COLOR = (0.0, 0.9, 1.0, 1.0)  # cyan: stands out on the images and on the colormap


def mask_outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The boundary of a boolean mask [H, W], `width` pixels thick (drawn outside the mask)."""
    grown = ndimage.binary_dilation(mask, iterations=width)
    return grown & ~mask


def _outline(ax: plt.Axes, mask: np.ndarray | None) -> None:
    if mask is None or not mask.any():
        return
    width = max(1, round(mask.shape[0] / 128))  # ~1 px at 128 px, 2 px at 256 px
    edge = np.zeros((*mask.shape, 4))
    edge[mask_outline(mask, width)] = MASK_COLOR
    ax.imshow(edge, interpolation="nearest")


def show_image(ax: plt.Axes, image: np.ndarray, mask: np.ndarray | None = None, title: str = "") -> None:
    """An image [S, S, 3] with its mask outlined."""
    ax.imshow(image)
    _outline(ax, mask)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def show_map(
    ax: plt.Axes, amap: np.ndarray, norm: Normalize, mask: np.ndarray | None = None, title: str = ""
) -> plt.cm.ScalarMappable:
    """An anomaly map [S, S] on the figure's colour scale `norm`, with the mask outlined; returns the image."""
    im = ax.imshow(amap, cmap=MAP_CMAP, norm=norm)
    _outline(ax, mask)
    ax.set_title(title, fontsize=7)
    ax.axis("off")
    return im


def shared_norm(maps: Sequence[np.ndarray], vmin: float | None = None, vmax: float | None = None) -> Normalize:
    """One colour scale over all `maps`: from their 1st to their 99.9th percentile unless given."""
    flat = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    lo = float(np.percentile(flat, 1)) if vmin is None else vmin
    hi = float(np.percentile(flat, 99.9)) if vmax is None else vmax
    return Normalize(lo, hi if hi > lo else lo + 1e-6)


def map_figure(
    images: np.ndarray,
    rows: dict[str, np.ndarray],
    masks: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    norm: Normalize | None = None,
    title: str = "",
    colorbar_label: str = "anomaly score (one scale for the whole figure)",
    size: float = 1.6,
) -> plt.Figure:
    """Images in the first row, then one row of maps per entry of `rows` ({label: maps [N, S, S]}).

    One colour scale for every map of the figure (`norm`, default :func:`shared_norm`) and one
    colorbar; masks [N, S, S] are outlined on images and maps; `titles` label the columns.
    """
    n = len(images)
    norm = norm or shared_norm(list(rows.values()))
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(size * n + 0.9, size * (1 + len(rows)) + 0.5), squeeze=False)
    for c in range(n):
        mask = None if masks is None else masks[c]
        show_image(axes[0, c], images[c], mask, titles[c] if titles else "")
        for r, (label, maps) in enumerate(rows.items(), start=1):
            im = show_map(axes[r, c], maps[c], norm, mask)
            if c == 0:
                text = "\n".join(textwrap.fill(part, width=max(12, int(size * 13))) for part in label.split("\n"))
                axes[r, c].text(
                    -0.08, 0.5, text, transform=axes[r, c].transAxes, rotation=90, ha="right", va="center", fontsize=7
                )  # wrapped to the row's height: a long label must not run into the next row
    # The band above the first row is fixed in inches (suptitle + column titles), not a fraction of the height: a
    # fraction left a tall figure with a wide empty band under its title.
    top = 1 - (0.62 if title else 0.3) / fig.get_figheight()
    fig.subplots_adjust(left=0.04, right=0.88, top=top, bottom=0.02, wspace=0.05, hspace=0.25)
    cax = fig.add_axes((0.9, 0.1, 0.015, 0.7))
    fig.colorbar(im, cax=cax).set_label(colorbar_label, fontsize=7)
    cax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9, y=0.99)
    return fig


def example_titles(category: ADCategory, index: Sequence[int]) -> list[str]:
    """Column titles of test images: the defect type, then subclass and seen/unseen where the category has them."""
    split, names = category.test, category.subclass_names
    titles = []
    for i in index:
        title = split.defect_types[i]
        if names and split.subclasses is not None:
            sub = names[split.subclasses[i]]
            title += f"\n{sub.split('_', 1)[-1]} ({'unseen' if sub in category.unseen_subclasses else 'seen'})"
        titles.append(title)
    return titles


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
    ncols: int = 6,
    size: float = 1.7,
    titles: list[str] | None = None,
    title: str = "",
) -> plt.Figure:
    """Images of `split` at `index` with their mask outlines, in a grid, under one title."""
    nrows = int(np.ceil(len(index) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.35 if title else 0)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(index):
            ax.axis("off")
            continue
        i = index[k]
        mask = split.masks[i] if split.masks is not None else None
        show_image(ax, split.images[i], mask, titles[k] if titles else split.defect_types[i])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def pca_labels(ax: plt.Axes, pca: object, what: str = "PC") -> None:
    """Axis labels of a 2-D projection with the share of variance each axis explains."""
    ratio = pca.explained_variance_ratio_  # type: ignore[attr-defined]
    ax.set_xlabel(f"{what} 1 ({100 * ratio[0]:.0f} % of variance)", fontsize=8)
    ax.set_ylabel(f"{what} 2 ({100 * ratio[1]:.0f} % of variance)", fontsize=8)


def _fit_text(text: plt.Text, room: float, renderer) -> None:
    """Make `text` at most `room` pixels wide: break it into two lines where it has spaces, then shrink it."""
    words = text.get_text()
    if text.get_window_extent(renderer).width > room and " " in words:
        width = next(w for w in range((len(words) + 1) // 2, len(words) + 1) if len(textwrap.wrap(words, w)) <= 2)
        text.set_text(textwrap.fill(words, width))
    while text.get_window_extent(renderer).width > room and text.get_fontsize() > 4:
        text.set_fontsize(text.get_fontsize() - 0.5)


def pipeline(stages: Sequence[tuple[str, str]], title: str = "", width: float = 1.55) -> plt.Figure:
    """A method drawn as boxes and arrows: `stages` = [(name, tensor shape or note), ...], left to right."""
    n = len(stages)
    fig, ax = plt.subplots(figsize=(width * n, 1.5))
    ax.set(xlim=(0, n), ylim=(0.1, 0.9))
    ax.axis("off")
    renderer = fig.canvas.get_renderer()
    for i, (name, shape) in enumerate(stages):
        box = plt.Rectangle((i + 0.08, 0.25), 0.84, 0.5, facecolor=(0.88, 0.92, 0.98), edgecolor="0.3", linewidth=0.8)
        ax.add_patch(box)
        room = 0.92 * box.get_window_extent(renderer).width
        for text in (
            ax.text(i + 0.5, 0.6, name, ha="center", va="center", fontsize=7.5, weight="bold"),
            ax.text(i + 0.5, 0.36, shape, ha="center", va="center", fontsize=6.5, family="monospace"),
        ):
            _fit_text(text, room, renderer)
        if i + 1 < n:
            ax.annotate("", (i + 1.08, 0.5), (i + 0.92, 0.5), arrowprops={"arrowstyle": "->", "lw": 0.9})
    if title:
        ax.set_title(title, fontsize=8.5)
    return fig
