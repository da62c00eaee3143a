"""AnomalyMoE's components: parts of an image found by clustering backbone features (no labels).

The component experts of AnomalyMoE (Gu et al., 2025) reconstruct one feature per *component* (a
part of the object: a screw, a label, a cable) instead of one per position. The authors find
components offline (their ``segment_image.py``): k-means (k = 5) of DINO features of the training
images, then for every image a heat map per cluster (similarity to the centre minus its mean, a dense
CRF), Otsu-thresholded into one mask per cluster; clusters that fill several image corners
(background) or are faint on the first training image are dropped for the whole category.

Ours, on CNN patch features ``[N, C, h, w]`` (AnomalyMoE passes them unstandardised, see there):

1. :func:`fit_centres`: k-means (``sklearn.cluster.KMeans``, ``random_state = seed``) of
   L2-normalised training features, on at most ``max_samples`` positions drawn with ``seed``
   (the authors: MiniBatchKMeans on a 1 % coreset of every image). Deterministic given the seed.
2. :func:`assign`: each position goes to its nearest centre by cosine (a hard partition; no CRF and
   no Otsu threshold, so the masks of one image never overlap and cover it).
3. :func:`find_components`: each cluster's mask is split into 8-connected parts; parts smaller than
   ``min_area`` positions, or touching more than ``max_border_sides`` of the 4 image sides (the
   background, which surrounds the object), are dropped. Per connected part rather than per
   cluster, so two screws are two components and a missing screw removes one. An image left with
   no part (a texture, a close-up) gets one component covering the whole image, so that no image
   escapes the component experts with a zero loss (ours; the authors' per-cluster masks rarely vanish).
4. :func:`pool`: a component's feature is the mean of the features under its mask, dilated by a
   ``dilation x dilation`` max-filter (the authors dilate by 5 at 28x28 positions) so that it also
   sees its rim.
5. :func:`paint`: a score per component is painted over its (undilated) mask; positions outside every
   component get 0. The masks are disjoint, so painting the maximum (the authors) is painting the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor


@dataclass
class Components:
    """The components of a set of images, sorted by image, then cluster, then raster order."""

    masks: Tensor  # [M, h, w] bool
    owner: Tensor  # [M] long: the image (index into the set) each component belongs to
    cluster: Tensor  # [M] long: the k-means cluster it came from

    def __len__(self) -> int:
        return len(self.owner)


def unit(x: Tensor, dim: int = 1) -> Tensor:
    """``x / ||x||`` along ``dim``."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def fit_centres(feats: Tensor, k: int = 5, seed: int = 0, max_samples: int = 20000) -> Tensor:
    """k-means centres ``[k', C]`` (unit norm, ``k' = min(k, positions)``) of L2-normalised ``feats: [N, C, h, w]``."""
    from sklearn.cluster import KMeans

    if k < 1:
        raise ValueError(f"component_clusters must be >= 1, got {k}")
    x = unit(feats.detach().float(), dim=1).permute(0, 2, 3, 1).reshape(-1, feats.shape[1])  # [P, C]
    x = x.cpu().numpy()
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]  # [S, C]
    km = KMeans(n_clusters=min(k, len(x)), n_init=3, random_state=seed).fit(x)
    return unit(torch.as_tensor(km.cluster_centers_, dtype=torch.float32), dim=1)  # [k', C]


def assign(feats: Tensor, centres: Tensor) -> Tensor:
    """Nearest centre by cosine for every position: ``[N, C, h, w], [k, C] -> [N, h, w]`` long."""
    sim = torch.einsum("nchw,kc->nkhw", unit(feats, dim=1), centres.to(feats))  # [N, k, h, w]
    return sim.argmax(dim=1)  # [N, h, w]


def min_area_positions(fraction: float, h: int, w: int) -> int:
    """``ceil(fraction * h * w)``, at least 1: the smallest component kept, in positions."""
    return max(1, math.ceil(fraction * h * w - 1e-9))


EIGHT_CONNECTED = np.zeros((3, 3, 3), dtype=bool)
EIGHT_CONNECTED[1] = True  # 8-neighbours within an image, never across images


def find_components(
    labels: Tensor, k: int, min_area: int = 1, max_border_sides: int = 1, whole_if_none: bool = True
) -> Components:
    """Connected parts of each cluster in ``labels: [N, h, w]`` (cluster ids ``0..k-1``), filtered.

    A part is kept when it has at least ``min_area`` positions and touches at most ``max_border_sides``
    of the image's 4 sides (4: keep all). With ``whole_if_none``, an image left without any part gets
    one component that covers it all (cluster -1), so that every image has a component feature.
    """
    lab = labels.cpu().numpy()  # [N, h, w]
    n, h, w = lab.shape
    masks, owners, clusters = [], [], []
    for c in range(k):
        parts, count = ndimage.label(lab == c, structure=EIGHT_CONNECTED)  # [N, h, w] ids 1..count
        if count == 0:
            continue
        area = np.bincount(parts.ravel(), minlength=count + 1)  # [count + 1]
        sides = np.zeros(count + 1, dtype=np.int64)
        for edge in (parts[:, 0, :], parts[:, -1, :], parts[:, :, 0], parts[:, :, -1]):
            sides += np.bincount(np.unique(edge), minlength=count + 1) > 0  # touches this side
        keep = np.flatnonzero((area >= min_area) & (sides <= max_border_sides))
        keep = keep[keep > 0]  # id 0 is "not this cluster"
        if len(keep) == 0:
            continue
        boxes = ndimage.find_objects(parts)  # boxes[id - 1]: (image, row, column) slices of part id
        owner = np.array([boxes[i - 1][0].start for i in keep], dtype=np.int64)  # [m]  the image of each part
        masks.append(parts[owner] == keep[:, None, None])  # [m, h, w]
        owners.append(owner)
        clusters.append(np.full(len(keep), c))
    if whole_if_none:  # images without a part: the whole image is their one component
        bare = np.setdiff1d(np.arange(n), np.concatenate(owners) if owners else [])  # [n_bare]
        masks.append(np.ones((len(bare), h, w), dtype=bool))
        owners.append(bare)
        clusters.append(np.full(len(bare), -1))
    if not masks:
        none = torch.zeros(0, dtype=torch.long)
        return Components(torch.zeros(0, h, w, dtype=torch.bool), none, none.clone())
    owner = np.concatenate(owners).astype(np.int64)  # [M]
    order = np.argsort(owner, kind="stable")  # by image; within an image by cluster, then raster order
    return Components(
        torch.from_numpy(np.concatenate(masks)[order]),  # [M, h, w]
        torch.from_numpy(owner[order]).long(),  # [M]
        torch.from_numpy(np.concatenate(clusters)[order]).long(),  # [M]
    )


def components_of(
    feats: Tensor,
    centres: Tensor,
    min_area_fraction: float = 0.005,
    max_border_sides: int = 1,
    whole_if_none: bool = True,
) -> Components:
    """:func:`assign` then :func:`find_components` for ``feats: [N, C, h, w]``."""
    _, _, h, w = feats.shape
    labels = assign(feats, centres)  # [N, h, w]
    min_area = min_area_positions(min_area_fraction, h, w)
    return find_components(labels, len(centres), min_area, max_border_sides, whole_if_none)


def pool(feats: Tensor, comps: Components, dilation: int = 3) -> Tensor:
    """Mean feature under each (dilated) component mask: ``[N, C, h, w]`` -> ``[M, C]``."""
    if dilation < 1 or dilation % 2 == 0:
        raise ValueError(f"component_dilation must be an odd number >= 1, got {dilation}")
    if len(comps) == 0:
        return feats.new_zeros(0, feats.shape[1])  # [0, C]
    m = comps.masks.to(device=feats.device, dtype=feats.dtype)[:, None]  # [M, 1, h, w]
    if dilation > 1:
        m = F.max_pool2d(m, dilation, stride=1, padding=dilation // 2)  # [M, 1, h, w]
    m = m.flatten(1)  # [M, h*w]
    m = m / m.sum(dim=1, keepdim=True).clamp_min(1)  # [M, h*w]  averaging weights
    f = feats.flatten(2)  # [N, C, h*w]
    owners, counts = torch.unique_consecutive(comps.owner, return_counts=True)  # sorted by image
    out = [mi @ f[int(i)].T for i, mi in zip(owners, m.split(counts.tolist()), strict=True)]  # [m_i, C] each
    return torch.cat(out)  # [M, C]


def paint(scores: Tensor, comps: Components, n: int) -> Tensor:
    """Each component's score over its mask, 0 elsewhere: ``[M]`` -> ``[n, h, w]`` (masks are disjoint)."""
    _, h, w = comps.masks.shape
    out = scores.new_zeros(n, h * w)  # [n, h*w]
    values = scores[:, None] * comps.masks.flatten(1).to(scores)  # [M, h*w]
    out.index_add_(0, comps.owner.to(scores.device), values)  # [n, h*w]
    return out.view(n, h, w)  # [n, h, w]


def subset(comps: Components, rows: Tensor, n: int) -> tuple[Components, Tensor]:
    """The components of images ``rows`` (indices into ``range(n)``), re-numbered ``0..len(rows)-1``.

    Returns them and their indices ``[m]`` into ``comps`` (e.g. to pick their pooled features).
    """
    where = torch.full((n,), -1, dtype=torch.long)  # [n]  image -> position in rows
    where[rows.cpu()] = torch.arange(len(rows))
    pos = where[comps.owner]  # [M]
    idx = torch.nonzero(pos >= 0).squeeze(1)  # [m]
    return Components(comps.masks[idx], pos[idx], comps.cluster[idx]), idx
