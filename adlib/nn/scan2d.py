"""2-D scan orders: the paths along which a Mamba block reads an ``H x W`` feature map as a sequence.

A selective scan is causal along a 1-D sequence, so a 2-D map is read along several paths and the
outputs are put back on the map and combined (VMamba's cross-scan, MambaAD's hybrid scanning, section
3.3 of MambaAD: "8 directions" built from one space-filling curve).

**An order is a permutation.** ``order[i]`` is the row-major flat index (``r * W + c``) of the ``i``-th
cell visited, so ``seq = x.flatten(-2)[..., order]``; its inverse ``inv[order[i]] = i`` puts a
sequence back: ``seq[..., inv]`` is in map order. Both are exact (integer indexing).

Base paths (``path=``):
- ``"sweep"``: row by row, left to right (raster);
- ``"snake"``: boustrophedon, even rows left to right, odd rows right to left (MambaAD calls it
  ``"scan"``), so consecutive cells are always 4-neighbours;
- ``"hilbert"``: the Hilbert curve. It is defined on a ``2^k x 2^k`` square; for other sides we draw it
  on the enclosing power-of-two square and keep the cells inside the map, in curve order (a cell's
  successor is then a 4-neighbour except where the curve leaves the map and comes back). MambaAD's
  code only accepts power-of-two squares.

Directions (``K`` of them; forward paths first, then the same paths reversed, as in MambaAD):
``K = 1``: the path; ``K = 2``: + its reverse; ``K = 4``: the path on the map and on its transpose
(columns read as rows), + both reversed; ``K = 8``: four views of the map, + the four reversed.
MambaAD's four views are the map, its transpose, ``torch.rot90(x, 1)`` and the left-right flip. For
symmetric paths some of these coincide: the flip of a Hilbert curve is the curve reversed, and a snake
over an even number of rows repeats likewise, so MambaAD's 8 Hilbert or snake directions on an 8x8
map hold only 6 distinct orders. We keep MambaAD's views in its order but skip a view whose path (or
its reverse) is already taken, going on through the other symmetries of the square (``VIEWS``):
sweep keeps MambaAD's set; on power-of-two squares Hilbert uses rot180 instead of the flip and snake
uses the flip and rot270. Only a degenerate map (one row or column) has fewer distinct orders than K.

``merge_orders`` puts the K outputs back on the map and sums them (MambaAD's ``sum(ys)``);
``reduce="mean"`` averages, which makes ``merge_orders(flatten_orders(x)) == x``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PATHS = ("sweep", "snake", "hilbert")


def hilbert_curve(n: int) -> np.ndarray:
    """The Hilbert curve on an ``n x n`` grid (``n`` a power of two): ``[n*n, 2]`` (row, col) per step.

    The classic distance-to-coordinates conversion, vectorised over all distances: read the distance
    two bits at a time from the least significant; each pair picks a quadrant of the current ``s x s``
    square, and the partial path is rotated/reflected so that sub-curves join end to start.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"hilbert_curve: n must be a power of two >= 1, got {n}")
    t = np.arange(n * n)
    x, y = np.zeros_like(t), np.zeros_like(t)
    s = 1
    while s < n:
        rx = (t >> 1) & 1  # quadrant bits of this level
        ry = (t ^ rx) & 1
        flip = (ry == 0) & (rx == 1)
        x = np.where(flip, s - 1 - x, x)  # reflect the lower-right sub-curve
        y = np.where(flip, s - 1 - y, y)
        swap = ry == 0
        x, y = np.where(swap, y, x), np.where(swap, x, y)  # transpose the lower sub-curves
        x, y = x + s * rx, y + s * ry
        t >>= 2
        s <<= 1
    return np.stack([y, x], axis=1)  # (row, col)


def base_order(H: int, W: int, path: str = "hilbert") -> Tensor:
    """One path over an ``H x W`` map as row-major flat indices: ``[H*W]`` (int64)."""
    idx = np.arange(H * W).reshape(H, W)
    if path == "sweep":
        order = idx.reshape(-1)
    elif path == "snake":
        snake = idx.copy()
        snake[1::2] = snake[1::2, ::-1]  # odd rows right to left
        order = snake.reshape(-1)
    elif path == "hilbert":
        n = 1 << max(0, (max(H, W) - 1).bit_length())  # the enclosing power-of-two side
        rc = hilbert_curve(n)  # [n*n, 2]
        inside = (rc[:, 0] < H) & (rc[:, 1] < W)
        order = rc[inside, 0] * W + rc[inside, 1]
    else:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return torch.from_numpy(np.ascontiguousarray(order)).long()


# The eight symmetries of the square (the dihedral group) as views of an H x W map: for every original
# cell (r, c), its coordinates in the viewed map and that map's height and width.
VIEWS = {
    "map": lambda r, c, H, W: (r, c, H, W),
    "transpose": lambda r, c, H, W: (c, r, W, H),  # x.transpose(-2, -1)
    "rot90": lambda r, c, H, W: (W - 1 - c, r, W, H),  # torch.rot90(x, 1, (-2, -1))
    "fliplr": lambda r, c, H, W: (r, W - 1 - c, H, W),  # x.flip(-1) = the transpose of rot90
    "rot180": lambda r, c, H, W: (H - 1 - r, W - 1 - c, H, W),
    "rot270": lambda r, c, H, W: (c, H - 1 - r, W, H),
    "flipud": lambda r, c, H, W: (H - 1 - r, c, H, W),
    "antitranspose": lambda r, c, H, W: (W - 1 - c, H - 1 - r, W, H),
}


def view_order(H: int, W: int, path: str, view: str) -> Tensor:
    """The path run on a view of the map (a key of ``VIEWS``), as flat indices of the map: ``[H*W]``."""
    r, c = np.divmod(np.arange(H * W), W)  # every cell's coordinates on the map
    vr, vc, vH, vW = VIEWS[view](r, c, H, W)
    to_map = np.empty(H * W, dtype=np.int64)
    to_map[vr * vW + vc] = np.arange(H * W)  # flat index on the view -> flat index on the map
    return torch.from_numpy(to_map)[base_order(vH, vW, path)]


def scan_orders(H: int, W: int, K: int = 8, path: str = "hilbert") -> Tensor:
    """``K`` in {1, 2, 4, 8} directions over an ``H x W`` map: ``[K, H*W]`` int64 (see module docstring)."""
    if K not in (1, 2, 4, 8):
        raise ValueError(f"K must be 1, 2, 4 or 8, got {K}")
    views = {1: 1, 2: 1, 4: 2, 8: 4}[K]  # forward paths; the rest are their reverses
    chosen, seen, spare = [], set(), []
    for view in VIEWS:  # MambaAD's views first; skip one whose path or reverse is already taken
        order = view_order(H, W, path, view)
        pair = {tuple(order.tolist()), tuple(order.flip(0).tolist())}
        (spare if pair & seen else chosen).append(order)
        seen |= pair
        if len(chosen) == views:
            break
    forward = torch.stack((chosen + spare)[:views])  # a degenerate map (a single row) repeats: [K or K/2, L]
    return forward if K == 1 else torch.cat([forward, forward.flip(-1)])  # + reversed: [K, L]


def invert(orders: Tensor) -> Tensor:
    """Inverse permutations: ``inv[..., orders[..., i]] = i``; ``[K, L] -> [K, L]``."""
    inv = torch.empty_like(orders)
    arange = torch.arange(orders.shape[-1], device=orders.device).expand_as(orders)
    return inv.scatter_(-1, orders, arange)


def flatten_orders(x: Tensor, orders: Tensor) -> Tensor:
    """Read a map along K orders: ``[B, C, H, W]``, ``[K, L]`` -> ``[B, K, C, L]`` (contiguous)."""
    B, C = x.shape[:2]
    flat = x.flatten(2)  # [B, C, L]
    seqs = flat.index_select(2, orders.reshape(-1).to(x.device))  # [B, C, K*L]
    return seqs.view(B, C, *orders.shape).transpose(1, 2).contiguous()  # [B, K, C, L]


def merge_orders(ys: Tensor, orders: Tensor, H: int, W: int, reduce: str = "sum") -> Tensor:
    """Put K sequences back on the map and combine them: ``[B, K, C, L]`` -> ``[B, C, H, W]``.

    ``reduce="sum"`` as MambaAD (the SS2D output is layer-normalised next, so the scale is immaterial),
    ``"mean"`` for an average.
    """
    B, K, C, L = ys.shape
    inv = invert(orders).to(ys.device)  # [K, L]
    on_map = ys.gather(3, inv[None, :, None, :].expand(B, K, C, L))  # every direction in map order
    out = on_map.sum(1) if reduce == "sum" else on_map.mean(1) if reduce == "mean" else None  # [B, C, L]
    if out is None:
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    return out.view(B, C, H, W)
