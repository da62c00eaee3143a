"""Gating: keep the top-k routing weights of each input and mix the experts' outputs by them.

Adapted-MoE eq. (4) mixes the anomaly scores of the top-k experts by their routing weights::

    result = sum_{i in topk} w_i * S_i / sum_{i in topk} w_i                     (4)

Renormalising the top-k of softmax weights equals a softmax over the top-k logits alone, so the same
function serves routers that pick the top-k jointly and take a softmax over the selected (AnomalyMoE).
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
