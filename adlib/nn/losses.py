"""Losses shared by the methods: truncated l1, center, ranked list, hard-mined cosine, CLUB.

* **Truncated l1** (SimpleNet, Liu et al., CVPR 2023): push the discriminator's score of normal
  features above ``th+`` and of noisy fakes below ``-th-``.
* **Center loss** (Wen et al., ECCV 2016; Adapted-MoE eq. 2): ``alpha * ||x_i - c_{y_i}||^2 +
  (1 - alpha) * CE``, with centres moved towards their subclass's embeddings after every step.
* **Ranked list loss** (Wang et al., CVPR 2019): for each anchor, pull non-trivial positives inside
  ``alpha - m`` and push non-trivial negatives beyond ``alpha``, negatives weighted by
  ``exp(T (alpha - d))``.
* **Hard-mined cosine loss** (AnomalyMoE's patch experts, from Dinomaly): ``1 - cos`` per position,
  the easiest 90 % of positions passing only 0.1x of their gradient.
* **CLUB** (Cheng et al., ICML 2020; AnomalyMoE's Expert Information Repulsion): a variational upper
  bound of the mutual information between two experts' outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


# ----------------------------------------------------------------------------- AnomalyMoE


def hard_mined_cosine_loss(target: Tensor, recon: Tensor, p: float = 0.9, factor: float = 0.1) -> Tensor:
    """Per-image ``mean_positions (1 - cos(target, recon))``: ``[B, C, h, w]`` twice -> ``[B]``.

    The value is the plain cosine distance; only the gradient is mined (AnomalyMoE's patch experts, the
    authors' ``calculate_hm_loss_for_expert``): positions whose distance is below the batch's top
    ``1 - p`` fraction (the easiest ``p`` = 90 %) pass ``factor`` (0.1) times their gradient, the
    hardest ``floor((1 - p) * B*h*w)`` (at least one) their full gradient. ``target`` gets no gradient.
    Written as ``d * s + d.detach() * (1 - s)`` (value ``d``, gradient ``s``) instead of a hook.
    """
    d = 1 - F.cosine_similarity(target.detach(), recon, dim=1)  # [B, h, w]
    flat = d.detach().flatten()  # [B*h*w]
    k = max(1, math.floor(flat.numel() * (1 - p) + 1e-9))
    thresh = flat.topk(k).values[-1]  # the k-th largest distance
    scale = torch.where(d.detach() < thresh, factor, 1.0)  # [B, h, w]
    d = d * scale + d.detach() * (1 - scale)  # [B, h, w]  same value, mined gradient
    return d.flatten(1).mean(dim=1)  # [B]


class CLUBEstimator(nn.Module):
    """``q(y | x) = N(mu(x), diag exp(logvar(x)))``: two MLP heads ``D -> D/2 -> D`` (logvar through tanh).

    The heads are those of the AnomalyMoE authors' ``CLUBSample`` (after CLUB's release); the estimator
    learns by maximising :func:`club_log_likelihood` with its own optimiser, the experts minimise
    :func:`club_upper_bound`.
    """

    def __init__(self, x_dim: int, y_dim: int | None = None, hidden: int | None = None) -> None:
        super().__init__()
        y_dim = y_dim or x_dim
        hidden = hidden or max(1, x_dim // 2)
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(x), self.logvar(x)  # [B, D], [B, D]


def club_log_likelihood(estimator: CLUBEstimator, x: Tensor, y: Tensor) -> Tensor:
    """``mean_i log q(y_i | x_i)`` up to the constant ``-D/2 log 2 pi``: ``[B, Dx], [B, D] -> scalar``.

    The Gaussian log-likelihood with its ``-logvar / 2`` term (the authors' ``loglikeli`` leaves it out,
    so there the variance only grows until the tanh bound).
    """
    mu, logvar = estimator(x)  # [B, D], [B, D]
    return (-0.5 * ((y - mu) ** 2 / logvar.exp() + logvar)).sum(dim=1).mean()  # scalar


def club_upper_bound(estimator: CLUBEstimator, x: Tensor, y: Tensor) -> Tensor:
    """CLUB (Cheng et al. 2020, eq. 5): ``mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i)``; scalar.

    ``x: [B, Dx]``, ``y: [B, D]``. All ``B^2`` pairs (the ``logvar`` terms cancel); the authors' ``CLUBSample``
    uses one random permutation instead of all pairs. Near 0 for independent ``x, y``, positive when
    ``y`` depends on ``x`` (once the estimator has learnt ``q``).
    """
    mu, logvar = estimator(x)  # [B, D], [B, D]
    inv = torch.exp(-logvar)  # [B, D]  1 / var
    pos = -0.5 * ((y - mu) ** 2 * inv).sum(dim=1)  # [B]  log q(y_i | x_i)
    # ||mu_i - y_j||^2_{inv_i} = sum_d mu_id^2 inv_id - 2 mu_id inv_id y_jd + inv_id y_jd^2
    sq = (mu * mu * inv).sum(dim=1, keepdim=True) - 2 * (mu * inv) @ y.T + inv @ (y * y).T  # [B, B]
    neg = -0.5 * sq  # [B, B]  log q(y_j | x_i)
    return pos.mean() - neg.mean()  # scalar
