"""Losses shared by the methods: SimpleNet's truncated l1, the center loss, the ranked list loss.

* **Truncated l1** (SimpleNet, Liu et al., CVPR 2023): push the discriminator's score of normal
  features above ``th+`` and of noisy fakes below ``-th-``.
* **Center loss** (Wen et al., ECCV 2016; Adapted-MoE eq. 2): ``alpha * ||x_i - c_{y_i}||^2 +
  (1 - alpha) * CE``, with centres moved towards their subclass's embeddings after every step.
* **Ranked list loss** (Wang et al., CVPR 2019): for each anchor, pull non-trivial positives inside
  ``alpha - m`` and push non-trivial negatives beyond ``alpha``, negatives weighted by
  ``exp(T (alpha - d))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def truncated_l1_loss(d_true: Tensor, d_fake: Tensor, margin: float = 0.5) -> Tensor:
    """SimpleNet loss ``mean(relu(th - D(q))) + mean(relu(th + D(q-)))`` with th+ = th- = margin."""
    return F.relu(margin - d_true).mean() + F.relu(margin + d_fake).mean()  # scalar


def center_term(x: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Mean over the batch of ``||x_i - c_{y_i}||^2`` (squared, no 1/2, as eq. 2)."""
    return ((x - centers[labels]) ** 2).sum(dim=1).mean()  # scalar


def center_loss(x: Tensor, logits: Tensor, labels: Tensor, centers: Tensor, alpha: float = 0.5) -> Tensor:
    """Eq. (2): ``alpha * mean ||x_i - c_{y_i}||^2 + (1 - alpha) * CE(logits, y)``."""
    return alpha * center_term(x, labels, centers) + (1 - alpha) * F.cross_entropy(logits, labels)


@torch.no_grad()
def update_centers(centers: Tensor, x: Tensor, labels: Tensor, rate: float = 0.5) -> Tensor:
    """Wen et al. 2016 centre update; returns new centres ``[K, E]`` (input unchanged).

    ``delta_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``, ``c_j <- c_j - rate * delta_j``;
    centres of subclasses absent from the batch do not move.
    """
    k = len(centers)
    onehot = F.one_hot(labels, k).to(x.dtype)  # [B, K]
    n = onehot.sum(dim=0)  # [K]
    sum_x = onehot.T @ x  # [K, E]
    delta = (n[:, None] * centers - sum_x) / (1 + n[:, None])  # [K, E]
    return centers - rate * delta  # [K, E]


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances ``[B, E] -> [B, B]`` with a gradient that stays finite at 0."""
    sq = (x * x).sum(dim=1)  # [B]
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)  # [B, B]
    return torch.sqrt(d2 + 1e-12)  # [B, B]


def ranked_list_loss(
    x: Tensor,
    labels: Tensor,
    boundary: float = 1.2,
    margin: float = 0.4,
    temperature: float = 10.0,
    lam: float = 1.0,
) -> Tensor:
    """Ranked list loss (Wang et al., CVPR 2019) on L2-normalised embeddings ``x: [B, E]``.

    For each anchor ``i``: non-trivial positives (same label, ``d_ij > alpha - m``) are pulled in,
    ``L_P = mean_j (d_ij - (alpha - m))``; non-trivial negatives (other label, ``d_ij < alpha``)
    are pushed out, ``L_N = sum_j w_ij (alpha - d_ij) / sum_j w_ij`` with constant weights
    ``w_ij = exp(T (alpha - d_ij))``. ``L = mean_i (L_P + lambda * L_N)``; an anchor without
    non-trivial pairs contributes 0.
    """
    d = pairwise_distances(x)  # [B, B]
    same = labels[:, None] == labels[None, :]  # [B, B]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)  # [B, B]
    pos = same & ~eye & (d > boundary - margin)  # [B, B]  non-trivial positives
    neg = ~same & (d < boundary)  # [B, B]  non-trivial negatives
    pos_f = pos.to(x.dtype)
    l_pos = ((d - (boundary - margin)) * pos_f).sum(dim=1) / pos_f.sum(dim=1).clamp_min(1)  # [B]
    w = torch.exp(temperature * (boundary - d.detach())) * neg.to(x.dtype)  # [B, B]
    l_neg = (w * (boundary - d)).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)  # [B]
    return (l_pos + lam * l_neg).mean()  # scalar
