"""PatchCore: a memory bank of normal patch features and nearest-neighbour distances.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022:

* memory bank M = all training patch features (section 3.1), reduced by a greedy coreset (3.2):
  repeatedly add the feature farthest from the points already chosen (k-center greedy), with the
  distances measured after a random projection to a few dimensions (Johnson-Lindenstrauss);
* anomaly score of a test patch = distance to its nearest neighbour in M (3.3); the image score
  here follows the benchmark convention (max of the smoothed map, see `adlib.metrics`), and the
  paper's re-weighting of the image score is left out.

The selection adds `step` points at a time: the exact greedy runs inside a pool of the 8 * step
currently farthest points (cheap: only the pool's distances are updated between picks), then one
matrix product updates the distances of all points to the `step` new centres. With `step=1` this is
the textbook greedy; a step of a few dozen keeps the covering radius close to it (tests) and takes
the selection from hours to about a minute on a 2-core CPU at a 10 % ratio on 3e5 patches, where the
per-point loop of reference implementations reads all points once per pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime import progress_bar, resolve_device
from .base import TrainBudget, flatten_patches


@dataclass(frozen=True)
class PatchCoreConfig:
    coreset_ratio: float = 0.1  # fraction of training patches kept (PatchCore: 1 %, 10 %, 25 %)
    projection_dim: int = 128  # random projection used only for the coreset selection
    step: int | None = None  # points added per selection step; None: about n_select / 300
    chunk: int = 4096  # rows per distance block (memory)
    # How the outer ring of the patch grid is treated (notebook 01, "The border question"): "all"
    # positions alike (the paper); "crop": the ring is left out of the bank and scored by its nearest
    # inner neighbour; "ring_bank": ring patches are compared only with ring patches, inner with inner.
    border: str = "all"


BORDERS = ("all", "crop", "ring_bank")


def ring_mask(h: int, w: int) -> torch.Tensor:
    """[h, w] bool: True on the outer ring of positions (first and last row and column)."""
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    return ring


def _sq_dists(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [n, m] between rows of x [n, d] and y [m, d], via one matmul.

    x_sq [n] and y_sq [m] are the squared row norms, computed once by the caller.
    """
    d = torch.addmm(y_sq[None, :], x, y.T, alpha=-2)  # [n, m] = ||y||^2 - 2 x.y
    return d.add_(x_sq[:, None]).clamp_min_(0)


def _pick_batch(z: torch.Tensor, z_sq: torch.Tensor, min_d: torch.Tensor, b: int, pool: int = 8) -> torch.Tensor:
    """b greedy picks made among the pool*b currently farthest points, updating only their distances.

    Taking the b farthest points at once would spend several picks on one far-away cluster; the
    exact greedy inside the candidate pool sees that a pick covers its neighbours and moves on.
    """
    cand = torch.topk(min_d, min(len(min_d), pool * b)).indices  # [M]
    zc, zc_sq, cd = z[cand], z_sq[cand], min_d[cand].clone()  # [M, p], [M], [M]
    picks = torch.empty(b, dtype=torch.long, device=z.device)
    for i in range(b):
        j = int(torch.argmax(cd))
        picks[i] = j
        cd = torch.minimum(cd, _sq_dists(zc, zc[j : j + 1], zc_sq, zc_sq[j : j + 1])[:, 0])
    return cand[picks]


ROWS_PER_BLOCK = 1 << 18  # rows per block of the projection and of the distance updates (memory, not results)


def _min_sq_dists(z: torch.Tensor, z_sq: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[n]: each row's squared distance to the nearest of ``centres`` (indices), in row blocks: never [n, b] at once."""
    c, c_sq = z[centres], z_sq[centres]
    blocks = zip(z.split(ROWS_PER_BLOCK), z_sq.split(ROWS_PER_BLOCK), strict=True)
    return torch.cat([_sq_dists(zb, c, sb, c_sq).min(1).values for zb, sb in blocks])


def greedy_coreset(
    feats: torch.Tensor,
    n_select: int,
    projection_dim: int = 128,
    step: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Indices [n_select] of a k-center greedy coreset of the rows of feats [n, d].

    ``feats`` may also be patch maps [N, d, h, w]: the rows are then the patches (:func:`flatten_patches`
    order), projected a block of images at a time, so that the [N*h*w, d] copy of a flattening is never made
    (a bank of every class is several GB of it). Blocks change no value: each row is projected alone.
    """
    maps = feats.dim() == 4
    d = feats.shape[1]
    n = feats.shape[0] * feats.shape[2] * feats.shape[3] if maps else feats.shape[0]
    n_select = int(min(max(n_select, 1), n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if projection_dim and projection_dim < d:
        proj = torch.randn(d, projection_dim, generator=gen).to(feats.device) / projection_dim**0.5  # [d, p]
        per_block = max(1, ROWS_PER_BLOCK // (n // len(feats))) if maps else ROWS_PER_BLOCK
        blocks = (flatten_patches(f) if maps else f for f in feats.split(per_block))
        z = torch.cat([f @ proj for f in blocks])  # [n, p]
    else:
        z = flatten_patches(feats) if maps else feats
    step = step or max(1, n_select // 300)
    z_sq = (z * z).sum(1)  # [n]
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [torch.tensor([first], device=feats.device)]
    min_d = _min_sq_dists(z, z_sq, chosen[0])  # [n]
    n_done = 1
    with progress_bar(total=n_select, desc="coreset", disable=not progress, leave=False) as bar:
        bar.update(1)
        while n_done < n_select:
            b = min(step, n_select - n_done)
            new = _pick_batch(z, z_sq, min_d, b)  # [b]
            chosen.append(new)
            min_d = torch.minimum(min_d, _min_sq_dists(z, z_sq, new))
            n_done += b
            bar.update(b)
    return torch.cat(chosen)


def patch_rows(feats: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``flatten_patches(feats)`` ([k, C]), gathered from the maps [N, C, h, w] without flattening."""
    h, w = feats.shape[-2:]
    idx = idx.to(feats.device)
    image, pos = idx // (h * w), idx % (h * w)
    return feats[image, :, pos // w, pos % w]  # [k, C]


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of each query row [n, d] to its nearest bank row [m, d] -> [n]."""
    bank_sq = (bank * bank).sum(1)  # [m]
    out = torch.empty(len(queries), device=queries.device)
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]  # [chunk, d]
        out[i : i + chunk] = _sq_dists(q, bank, (q * q).sum(1), bank_sq).min(1).values
    return out.sqrt()


class PatchCore:
    """Fit on normal patch features [N, C, h, w]; score gives patch scores [N, h, w]."""

    def __init__(
        self, config: PatchCoreConfig = PatchCoreConfig(), device: str | torch.device = "auto", seed: int = 0
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.seed = seed  # random projection and first coreset point
        if config.border not in BORDERS:
            raise ValueError(f"PatchCoreConfig.border must be one of {BORDERS}, got {config.border!r}")
        self.memory_bank: torch.Tensor | None = None  # [M, C]  (inner patches with border="ring_bank")
        self.ring_bank: torch.Tensor | None = None  # [M_ring, C]  with border="ring_bank"

    def _coreset(self, patches: torch.Tensor, progress: bool) -> torch.Tensor:
        """The greedy coreset at the configured ratio (all of them at ratio >= 1) of `patches`: rows [P, C], or
        patch maps [N, C, h, w] whose rows are never flattened whole (:func:`greedy_coreset`)."""
        maps = patches.dim() == 4
        if self.config.coreset_ratio >= 1:
            return flatten_patches(patches).to(self.device) if maps else patches
        n = patches.shape[0] * patches.shape[2] * patches.shape[3] if maps else len(patches)
        n_select = max(1, int(round(n * self.config.coreset_ratio)))
        idx = greedy_coreset(patches, n_select, self.config.projection_dim, self.config.step, self.seed, progress)
        return (patch_rows(patches, idx) if maps else patches[idx]).to(self.device)

    def fit(self, feats: torch.Tensor, progress: bool = False) -> PatchCore:
        """Build the memory bank(s) from normal patch features ``[N, C, h, w]``."""
        h, w = feats.shape[-2:]
        if self.config.border == "crop":
            feats = feats[:, :, 1:-1, 1:-1]  # [N, C, h-2, w-2]  the outer ring left out
        if self.config.border == "ring_bank":
            ring = ring_mask(h, w).flatten().repeat(len(feats))  # [N*h*w]
            patches = flatten_patches(feats).to(self.device)  # [N*h*w, C]
            self.ring_bank = self._coreset(patches[ring.to(self.device)], progress)
            self.memory_bank = self._coreset(patches[~ring.to(self.device)], progress)
            return self
        self.memory_bank = self._coreset(feats.to(self.device), progress)  # [M, C]
        return self

    @torch.inference_mode()
    def score(self, feats: torch.Tensor) -> torch.Tensor:
        """Patch anomaly scores [N, h, w] (distance to the nearest memory-bank feature), on the CPU."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.score called before fit")
        n, _, h, w = feats.shape
        if self.config.border == "crop":  # score the inner grid, copy each ring position's nearest inner score
            inner = self._distances(feats[:, :, 1:-1, 1:-1], self.memory_bank)  # [N, h-2, w-2]
            return F.pad(inner[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # [N, h, w]
        if self.config.border == "ring_bank":
            assert self.ring_bank is not None
            q = flatten_patches(feats).to(self.device)  # [N*h*w, C]
            ring = ring_mask(h, w).flatten().repeat(n).to(self.device)  # [N*h*w]
            out = torch.empty(len(q), device=self.device)
            out[ring] = nearest_distance(q[ring], self.ring_bank, self.config.chunk)
            out[~ring] = nearest_distance(q[~ring], self.memory_bank, self.config.chunk)
            return out.reshape(n, h, w).cpu()
        return self._distances(feats, self.memory_bank)

    def _distances(self, feats: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        q = flatten_patches(feats).to(self.device)  # [N*h*w, C]
        return nearest_distance(q, bank, self.config.chunk).reshape(n, h, w).cpu()


def fit(
    train_feats: torch.Tensor, cfg: PatchCoreConfig | None = None, budget: TrainBudget = TrainBudget()
) -> PatchCore:
    """The method contract: a PatchCore memory bank of ``train_feats: [N, C, h, w]`` on ``budget.device``."""
    return PatchCore(cfg or PatchCoreConfig(), budget.device, budget.seed).fit(train_feats, budget.progress)
