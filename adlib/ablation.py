"""Ablations of Adapted-MoE: the switch grid, which configurations share a training, score grids.

Table 3 of the paper switches MoE, TTA and Norm; Figure 6 the top-k; Table 4 the routing loss. Only
``moe``, ``norm``, ``routing_loss`` and the sub-configs change what is trained (:func:`training_key`);
``tta``, ``top_k`` and the routing temperature change how the trained experts are used. So Table 3's
8 combinations need 4 trainings (:func:`fit_ablation`), and :class:`ScoreGrid` scores every test
image with every expert of every trained model, once with and once without TTA, and then serves any
(moe, tta, norm, top_k) combination by eq. (4) (``adlib.nn.gating.aggregate_topk``) without running
an expert again. That is what makes the notebooks' widgets instant and the ablation cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field, replace

import numpy as np
from torch import Tensor

from .methods import adapted_moe
from .methods.adapted_moe import AdaptedMoE, AdaptedMoEConfig, all_expert_scores, predict, routing_weights
from .methods.base import TrainBudget
from .nn.gating import aggregate_topk
from .runtime import progress_bar

# (moe, tta, norm) of the 8 combinations: the baseline, each component alone, each pair, all three.
# The first 7 follow the rows of the paper's Table 3 as adlib.paper_numbers.adapted_moe infers them;
# the last, TTA + Norm without MoE, has no row in the paper.
ABLATION_FLAGS: list[tuple[bool, bool, bool]] = [
    (False, False, False),
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (True, False, True),
    (True, True, True),
    (False, True, True),
]


def training_key(cfg: AdaptedMoEConfig) -> tuple:
    """What determines the trained model; configs with equal keys share one training.

    Coarser than ``adapted_moe.trained_config``: without MoE the routing loss and router settings do
    not matter either.
    """
    router = astuple(cfg.router) if cfg.moe else None
    return (cfg.moe, cfg.norm, cfg.routing_loss if cfg.moe else None, astuple(cfg.expert), router)


def ablation_configs(base: AdaptedMoEConfig | None = None) -> list[AdaptedMoEConfig]:
    """The 8 on/off combinations of (moe, tta, norm), in ``ABLATION_FLAGS`` order."""
    base = base or AdaptedMoEConfig()
    return [replace(base, moe=m, tta=t, norm=n) for m, t, n in ABLATION_FLAGS]


def fit_ablation(
    train_feats: Tensor,
    cfgs: Sequence[AdaptedMoEConfig],
    budget: TrainBudget = TrainBudget(),
    subclasses: np.ndarray | Tensor | None = None,
    fit: Callable[..., AdaptedMoE] | None = None,
) -> dict[tuple, AdaptedMoE]:
    """One trained model per distinct ``training_key`` of ``cfgs`` (4 for Table 3's 8 configs).

    Same arguments as ``adapted_moe.fit``, with a list of configs in place of one. ``fit`` (default
    ``adapted_moe.fit``) is called as ``fit(train_feats, cfg, budget, subclasses=...)``: pass
    ``functools.partial(adlib.evaluate.fit_cached, "adapted_moe", data_key=...)`` to use the model cache.
    """
    fit = fit or adapted_moe.fit
    models: dict[tuple, AdaptedMoE] = {}
    for cfg in progress_bar(cfgs, desc="ablation", disable=not budget.progress, leave=False):
        key = training_key(cfg)
        if key not in models:
            models[key] = fit(train_feats, cfg, budget, subclasses=subclasses)
    return models


def run_ablation(
    train_feats: Tensor,
    test_feats: Tensor,
    cfgs: Sequence[AdaptedMoEConfig],
    budget: TrainBudget = TrainBudget(),
    subclasses: np.ndarray | Tensor | None = None,
) -> list[adapted_moe.MoEPrediction]:
    """Predictions for each config, training each distinct ``training_key`` only once."""
    models = fit_ablation(train_feats, cfgs, budget, subclasses)
    return [
        predict(models[training_key(c)], test_feats, tta=c.tta, top_k=c.top_k, temperature=c.temperature) for c in cfgs
    ]


@dataclass
class ScoreGrid:
    """Every expert's patch scores on every test image, per trained model and TTA switch.

    ``models`` maps ``(moe, norm)`` to a trained :class:`~adlib.methods.adapted_moe.AdaptedMoE` (as produced by
    :func:`fit_ablation` for Table 3's configs). :meth:`compute` fills ``weights[(moe, norm)]:
    [N, K]`` and ``expert_scores[(moe, norm, tta)]: [N, K, h, w]``; :meth:`patch_scores` mixes them
    by eq. (4) for any top-k, identical to ``adlib.methods.adapted_moe.predict`` (tested).
    """

    models: dict[tuple[bool, bool], AdaptedMoE]
    weights: dict[tuple[bool, bool], Tensor] = field(default_factory=dict)
    expert_scores: dict[tuple[bool, bool, bool], Tensor] = field(default_factory=dict)

    def compute(self, test_feats: Tensor, tta: Sequence[bool] = (False, True)) -> ScoreGrid:
        """Score ``test_feats: [N, C, h, w]`` with every expert of every model (for each TTA switch)."""
        for (moe, norm), model in self.models.items():
            self.weights[(moe, norm)] = routing_weights(model, test_feats)  # [N, K]
            for t in tta:
                self.expert_scores[(moe, norm, t)] = all_expert_scores(model, test_feats, tta=t)  # [N, K, h, w]
        return self

    def n_experts(self, moe: bool, norm: bool) -> int:
        return self.models[(moe, norm)].n_experts

    def patch_scores(self, moe: bool, tta: bool, norm: bool, top_k: int) -> Tensor:
        """Eq. (4) with the top-``top_k`` routing weights: ``[N, h, w]``."""
        return aggregate_topk(self.expert_scores[(moe, norm, tta)], self.weights[(moe, norm)], top_k)
