"""Experiment glue for the SimpleNet / Adapted-MoE notebooks (02-04): per-subclass metrics, score grids.

Adapted-MoE (Lei, Chen et al., 2024) reports every number *per unseen subclass* (Tables 1-2) and
as the average over a category's unseen subclasses (Tables 1-4). :func:`subclass_metrics` computes
exactly that from anomaly maps: I-AUROC from the image scores of one subclass's normal and anomalous
test images, P-AUROC from the maps of that subclass's test images against their masks.

Table 3 and Figure 6 switch MoE, TTA, Norm and top-k. Only MoE and Norm change what is trained; TTA
and top-k change how the trained experts are used. :class:`ScoreGrid` therefore scores every test
image with every expert of every trained model, once with and once without TTA, and then serves
any (moe, tta, norm, top_k) combination by eq. (4) (``adlib.moe.aggregate_topk``) without running
an expert again. That is what makes the notebooks' widgets instant and the ablation cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .data import ADCategory
from .evaluate import maps_and_scores  # noqa: F401  (re-exported for the notebooks)
from .metrics import ranking_metrics
from .moe import AdaptedMoE, aggregate_topk, all_expert_scores, routing_weights

SUBCLASS_METRICS = ("I-AUROC", "P-AUROC")


def subclass_metrics(
    category: ADCategory, scores: np.ndarray, maps: np.ndarray | None = None
) -> list[dict[str, object]]:
    """One row per test subclass: its name, whether it was seen in training, image counts, I-AUROC, P-AUROC.

    I-AUROC ranks the subclass's anomalous images against its normal ones by ``scores: [N]``;
    P-AUROC ranks the pixels of the subclass's test maps ``[N, S, S]`` against their masks (NaN
    without masks). A subclass lacking normal or anomalous test images gets NaN I-AUROC.
    """
    test = category.test
    if test.subclasses is None or category.subclass_names is None:
        raise ValueError(f"{category.key} has no subclass labels")
    scores = np.asarray(scores)
    rows = []
    for k, name in enumerate(category.subclass_names):
        idx = np.flatnonzero(test.subclasses == k)
        if len(idx) == 0:
            continue
        labels = test.labels[idx]
        row: dict[str, object] = {
            "subclass": name,
            "seen": name not in category.unseen_subclasses,
            "normal": int((labels == 0).sum()),
            "anomalous": int((labels == 1).sum()),
            "I-AUROC": ranking_metrics(scores[idx], labels)["AUROC"],
            "P-AUROC": float("nan"),
        }
        if maps is not None and test.masks is not None:
            row["P-AUROC"] = ranking_metrics(maps[idx], test.masks[idx])["AUROC"]
        rows.append(row)
    return rows


def subclass_means(rows: Sequence[dict[str, object]]) -> dict[str, float]:
    """Means of the per-subclass metrics over the unseen subclasses (the paper's "Average") and the seen ones.

    Keys: ``"unseen I-AUROC"``, ``"unseen P-AUROC"``, ``"seen I-AUROC"``, ``"seen P-AUROC"``.
    NaN entries are left out; a group without values gives NaN.
    """
    out = {}
    for group, seen in (("unseen", False), ("seen", True)):
        for m in SUBCLASS_METRICS:
            vals = [float(r[m]) for r in rows if bool(r["seen"]) == seen and not np.isnan(float(r[m]))]
            out[f"{group} {m}"] = float(np.mean(vals)) if vals else float("nan")
    return out


def overall_metrics(category: ADCategory, scores: np.ndarray, maps: np.ndarray | None = None) -> dict[str, float]:
    """I-AUROC and P-AUROC over the whole test split (all subclasses pooled)."""
    test = category.test
    out = {"I-AUROC": ranking_metrics(scores, test.labels)["AUROC"], "P-AUROC": float("nan")}
    if maps is not None and test.masks is not None:
        out["P-AUROC"] = ranking_metrics(maps, test.masks)["AUROC"]
    return out


@dataclass
class ScoreGrid:
    """Every expert's patch scores on every test image, per trained model and TTA switch.

    ``models`` maps ``(moe, norm)`` to a trained :class:`~adlib.moe.AdaptedMoE` (as produced by
    ``adlib.moe.fit_ablation`` for Table 3's configs). :meth:`compute` fills ``weights[(moe, norm)]:
    [N, K]`` and ``expert_scores[(moe, norm, tta)]: [N, K, h, w]``; :meth:`patch_scores` mixes them
    by eq. (4) for any top-k, identical to ``adlib.moe.predict`` (tested).
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


def to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    """A CPU numpy copy of a tensor (or the array itself)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
