"""Gating: keep the top-k routing weights of each input and mix the experts' outputs by them.

Adapted-MoE eq. (4) mixes the anomaly scores of the top-k experts by their routing weights::

    result = sum_{i in topk} w_i * S_i / sum_{i in topk} w_i                     (4)

Renormalising the top-k of softmax weights equals a softmax over the top-k logits alone, so the same
function serves routers that pick the top-k jointly and take a softmax over the selected (AnomalyMoE).

AnomalyMoE's Expert Selection Balancing loss (``esb_loss``: importance, load and z-loss) closes the file.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_weights(weights: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest weights per row and renormalise them to sum 1: ``[N, K] -> [N, K]``."""
    k = max(1, min(k, weights.shape[1]))
    idx = weights.topk(k, dim=1).indices  # [N, k]
    kept = torch.zeros_like(weights).scatter(1, idx, weights.gather(1, idx))  # [N, K]
    return kept / kept.sum(dim=1, keepdim=True).clamp_min(1e-12)  # [N, K]


def aggregate_topk(expert_scores: Tensor, weights: Tensor, k: int) -> Tensor:
    """Eq. (4): ``sum_{topk} w_i S_i / sum_{topk} w_i``; ``[N, K, h, w]``, ``[N, K]`` -> ``[N, h, w]``."""
    w = topk_weights(weights, k)  # [N, K]
    return (w[:, :, None, None] * expert_scores).sum(dim=1)  # [N, h, w]


# ----------------------------------------------------------------------------- ESB (AnomalyMoE)
# Expert Selection Balancing (AnomalyMoE, Gu et al. 2025), as in the authors' `calculate_esb_loss`:
#
#     ESB = N * sum_j P_j^2  +  sum_j relu(load_j - capacity)^2  +  z-loss
#
# with ``P_j`` the mean over the batch of expert j's softmax probability over all N experts (the
# importance term is 1, its minimum, exactly when the mean probabilities are uniform), ``load_j`` the
# fraction of the batch's images whose top-k contains expert j (``sum_j load_j = k``; k times the
# fraction of the top-k assignments) and ``capacity = capacity_factor / N`` (the authors'
# ``capacity_factor * B / N`` images, divided by B: their load term is ours times B^2). The load is a
# count of hard top-k choices: it has no gradient, in the authors' code as here; it shows in the logged
# value only. The z-loss is the authors' ``mean(logits^2)`` (``z="logits"``: it keeps every logit near
# 0, so the softmax cannot saturate and the importance term keeps a gradient towards unused experts) or
# ST-MoE's ``mean(logsumexp(logits)^2)`` (``z="logsumexp"``: it keeps the normaliser near 0 but lets
# unused experts' logits fall to -inf, where neither term can bring them back).


def importance_loss(probs: Tensor) -> Tensor:
    """``N * sum_j P_j^2`` with ``P_j`` the batch mean of ``probs: [B, N]`` (rows sum to 1); minimum 1 (uniform)."""
    p = probs.mean(dim=0)  # [N]
    return probs.shape[1] * (p * p).sum()  # scalar


def topk_mask(logits: Tensor, k: int) -> Tensor:
    """1 where an expert is among the row's ``k`` largest logits, else 0: ``[B, N] -> [B, N]`` (no gradient)."""
    k = max(1, min(k, logits.shape[1]))
    idx = logits.detach().topk(k, dim=1).indices  # [B, k]
    return torch.zeros_like(logits, requires_grad=False).scatter(1, idx, 1.0)  # [B, N]


def load_loss(selected: Tensor, capacity_factor: float = 4.0) -> Tensor:
    """``sum_j relu(load_j - capacity_factor / N)^2``; ``selected: [B, N]`` 0/1 top-k choices, ``load_j`` their mean."""
    load = selected.float().mean(dim=0)  # [N]  fraction of images that route to j
    over = torch.relu(load - capacity_factor / selected.shape[1])  # [N]
    return (over * over).sum()  # scalar


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss ``mean_b logsumexp(logits_b)^2``: ``[B, N] -> scalar``."""
    return (torch.logsumexp(logits, dim=1) ** 2).mean()  # scalar


def logit_l2_loss(logits: Tensor) -> Tensor:
    """The AnomalyMoE authors' "z-loss" ``mean(logits^2)`` over all entries: ``[B, N] -> scalar``."""
    return (logits**2).mean()  # scalar


Z_LOSSES = {"logits": logit_l2_loss, "logsumexp": router_z_loss}


def esb_loss(logits: Tensor, k: int, capacity_factor: float = 4.0, z: str = "logits") -> Tensor:
    """Expert Selection Balancing: importance + load + z-loss of router ``logits: [B, N]`` with top-``k`` routing."""
    if z not in Z_LOSSES:
        raise ValueError(f"z must be one of {sorted(Z_LOSSES)}, got {z!r}")
    probs = torch.softmax(logits, dim=1)  # [B, N]
    return importance_loss(probs) + load_loss(topk_mask(logits, k), capacity_factor) + Z_LOSSES[z](logits)
