"""The method contract; the training glue every learned method shares is ``adlib.training``.

Every method in `adlib.methods` has

* a config dataclass whose defaults are the paper's (``PatchCoreConfig``, ``SimpleNetConfig``,
  ``AdaptedMoEConfig``, ...), each default with a comment naming its source;
* ``fit(train_feats, cfg, budget, ...) -> model`` on normal training features ``[N, C, h, w]``;
* a model whose ``score(feats [N, C, h, w]) -> [N, h, w]`` gives patch anomaly scores (higher =
  more anomalous), which `adlib.maps` turns into maps and image scores.

How long and where to train travels as one :class:`TrainBudget` (defined in ``adlib.training``, the one
loop), built from the run profile (``adlib.config.Profile.budget``), never as loose arguments.
``adlib.evaluate.run_method`` is the one path from a category to maps, scores, metrics and timings for any method.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from ..training import TrainBudget

__all__ = ["PatchScorer", "TrainBudget", "flatten_patches"]


class PatchScorer(Protocol):
    """What `fit` returns: a model that scores patch features."""

    def score(self, feats: Tensor) -> Tensor:  # [N, C, h, w] -> [N, h, w]
        ...


def flatten_patches(feats: Tensor) -> Tensor:
    """``[N, C, h, w] -> [N*h*w, C]``: one row per patch (order: image, row, column)."""
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
