"""Adapted-MoE (Lei, Chen et al., 2024): SimpleNet experts, a routing network, Norm and TTA.

The method, section "Method" of the paper, on frozen backbone patch features ``[N, C, h, w]``:

- **Mixture of experts, eq. (3).** One expert per training subclass; an expert is a SimpleNet
  (adaptor + discriminator, trained on its subclass's normal features with Gaussian-noise fakes,
  ``adlib.methods.simplenet``). The routing network (``adlib.methods.routing``, eq. 1-2) learns to tell subclasses
  apart. ``L_total = L_routing + sum_i L_expert^i``. Router and experts share no parameters, so the
  gradient of ``L_total`` with respect to each of them is the gradient of its own term: we train
  the router and each expert separately, with exactly these loss terms (only the minibatches and
  optimisers are separate). Experts see the features of their own subclass (ground-truth
  subclass labels at training time; the router is only used at test time).
- **Aggregation, eq. (4).** The test image is routed to the top-k experts by its routing weights
  ``w_i`` (cosine to the subclass centres, softmax) and the scores are mixed::

      score = sum_{i in topk} w_i * Expert_i(x) / sum_{i in topk} w_i           (4)

  (the printed equation also multiplies by ``x_test^i``; we read ``w_i x_test^i`` as "the routing
  weight of expert i for x_test").
- **Norm.** ``x <- x / ||x||``: every patch feature is L2-normalised over channels before an expert
  sees it (training and test), and the routing embedding is L2-normalised (``RouterConfig.norm``).
- **Test-time adaptation (TTA), eq. (5)-(6).** Before expert ``k`` scores a test image, the image's
  features are moved onto the expert's training distribution and L2-normalised::

      x' = (x - mean(x)) * std_k / std(x) + c_k                                  (5)
      x' = x' / ||x'||                                                           (6)

**Which dimensions (our choice, as in the authors' code).** ``mean(x)``, ``std(x)`` are taken per
image and per channel over the image's ``h*w`` patch positions (``[N, C, 1, 1]``); ``c_k`` is the
per-channel mean of expert ``k``'s training patch features and ``std_k`` the per-channel
within-image standard deviation of its training images (root mean over images of the per-image
variance), both ``[C]`` and both measured on what the expert was trained on (after Norm when Norm is
on). So TTA is an AdaIN-like per-channel re-standardisation that leaves a typical training image of
the subclass nearly unchanged. Eq. (6) is the L2 norm over channels of each patch. Without MoE, TTA
uses the centre/std of all training features; Norm without MoE just normalises the features.
With TTA on and Norm off, eq. (6) still L2-normalises, so the experts (trained on raw features) see
unit-norm inputs only at test time: that is our reading of the paper's definition, and Table 3's
TTA-without-Norm rows measure exactly this mismatch; ``tta_l2_without_norm=False`` is the other
reading (eq. 6 only with Norm), reported as extra rows.

**Ablations without retraining.** Only ``moe``, ``norm``, ``routing_loss`` and the sub-configs
change what is trained; ``tta``, ``top_k`` and the routing temperature are test-time switches of
``predict``. Table 3's 8 combinations need 4 trainings ({MoE on/off} x {Norm on/off}), the top-k
sweep of Figure 6 none (``all_expert_scores`` + ``adlib.nn.gating.aggregate_topk``); ``adlib.ablation``
does this bookkeeping. Experts learn from ground-truth subclass
labels and never see the router, so Table 4's routing losses share one set of experts and only
retrain the router (``with_router``).

**Training length.** Experts and router count optimizer steps (``TrainBudget``: ``steps`` x
``patches_per_step`` patches per expert, ``router_steps`` x ``router_batch`` images for the router,
from the profile), not the paper's 160 epochs: see ``adlib.methods.simplenet``.

**Our extension.** Where a data set has no subclass labels, ``fit`` makes ``cfg.pseudo_subclasses``
(4) of them with k-means on GAP features (``pseudo_subclasses``); the paper always uses the data
set's subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.gating import topk_weights
from ..runtime import progress_bar
from . import simplenet
from .base import TrainBudget
from .routing import RouterConfig, RoutingNetwork, route, train_router
from .simplenet import SimpleNet, SimpleNetConfig


@dataclass
class AdaptedMoEConfig:
    """Switches of Table 3 (``moe``, ``tta``, ``norm``), Figure 6 (``top_k``), Table 4 (loss)."""

    moe: bool = True  # one expert per subclass + routing; False: one SimpleNet on all data
    tta: bool = True  # test-time adaptation, eq. (5)-(6) (test time only)
    norm: bool = True  # L2-normalise expert features and the routing embedding
    top_k: int = 4  # experts mixed by eq. (4); Figure 6: top-4 best on cloth (test time only)
    routing_loss: str = "center"  # "softmax" | "center" (eq. 2) | "ranked_list"
    temperature: float = 1.0  # routing softmax temperature (paper: 1; test time only)
    tta_eps: float = 1e-6  # floor on std(x) in eq. (5)
    # Eq. (6) after eq. (5) even when Norm is off (our reading of the paper: TTA is eq. 5 *and* 6);
    # False is the other reading, eq. (6) only with Norm. Test time only.
    tta_l2_without_norm: bool = True
    pseudo_subclasses: int = 4  # our extension: k-means clusters where the data has no subclass labels
    expert: SimpleNetConfig = field(default_factory=SimpleNetConfig)
    router: RouterConfig = field(default_factory=RouterConfig)


# ----------------------------------------------------------------------------- equations


def normalize(x: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """The paper's Norm: ``x / ||x||`` along ``dim`` (patch features: ``dim=1`` of [N, C, h, w])."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


class L2Normalize(nn.Module):
    """``normalize`` as a module (a picklable ``features_transform`` for SimpleNet)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return normalize(x, self.dim)


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """Reshape ``[C]`` or ``[N, C]`` statistics to broadcast over ``x: [N, C, h, w]``."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1 if v.ndim == 2 else 1, x.shape[1], 1, 1)  # [1 or N, C, 1, 1]


def test_time_adapt(x: Tensor, center: Tensor, std: Tensor, eps: float = 1e-6, l2: bool = True) -> Tensor:
    """Eq. (5)-(6): ``[N, C, h, w] -> [N, C, h, w]``.

    Per image and channel, over the ``h*w`` positions: ``(x - mean) * std / std(x) + center``
    (population std, floored at ``eps``); then, if ``l2``, each patch is L2-normalised over
    channels (eq. 6). ``center`` and ``std`` are ``[C]`` (one expert) or ``[N, C]`` (per image).
    """
    mu = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
    sd = x.std(dim=(2, 3), correction=0, keepdim=True).clamp_min(eps)  # [N, C, 1, 1]
    y = (x - mu) * _per_channel(std, x) / sd + _per_channel(center, x)  # [N, C, h, w]  eq. (5)
    return normalize(y, dim=1) if l2 else y  # [N, C, h, w]  eq. (6)


test_time_adapt.__test__ = False  # type: ignore[attr-defined]  # its name starts with "test_": not a pytest test


def feature_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Centre and within-image std of training features, both ``[C]`` (see module docstring).

    ``center = mean over (N, h, w)``; ``std = sqrt(mean over N of var over (h, w))``.
    """
    center = feats.mean(dim=(0, 2, 3))  # [C]
    var = feats.var(dim=(2, 3), correction=0)  # [N, C]
    return center, var.mean(dim=0).sqrt()  # [C], [C]


# ----------------------------------------------------------------------------- model


class AdaptedMoE(nn.Module):
    """Trained experts (+ router) and the per-expert training statistics used by TTA."""

    centers: Tensor
    stds: Tensor

    def __init__(
        self,
        cfg: AdaptedMoEConfig,
        experts: list[SimpleNet],
        router: RoutingNetwork | None,
        centers: Tensor,
        stds: Tensor,
        subclass_ids: list[int],
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.experts = nn.ModuleList(experts)
        self.router = router
        self.register_buffer("centers", centers)  # [K, C]  c_k of eq. (5)
        self.register_buffer("stds", stds)  # [K, C]  std_k of eq. (5)
        self.subclass_ids = subclass_ids  # expert k serves training subclass subclass_ids[k]

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def score(self, feats: Tensor) -> Tensor:
        """Patch anomaly scores ``[N, C, h, w] -> [N, h, w]`` with the config's switches (:func:`predict`)."""
        return predict(self, feats).patch_scores


@dataclass
class MoEPrediction:
    """Output of ``predict``: patch scores and the routing that produced them (all on CPU)."""

    patch_scores: Tensor  # [N, h, w]  higher = more anomalous
    weights: Tensor  # [N, K]  routing weights (all ones [N, 1] without MoE)
    mixture: Tensor  # [N, K]  the top-k weights actually used by eq. (4)
    cfg: AdaptedMoEConfig  # the configuration (incl. test-time switches) that produced it


def fit(
    train_feats: Tensor,
    cfg: AdaptedMoEConfig | None = None,
    budget: TrainBudget = TrainBudget(),
    subclasses: np.ndarray | Tensor | None = None,
) -> AdaptedMoE:
    """Train Adapted-MoE (or the single-SimpleNet baseline when ``cfg.moe`` is False).

    ``train_feats: [N, C, h, w]`` normal training features; ``subclasses: [N]`` subclass ids (any
    integers, e.g. ``ADSplit.subclasses``), ignored without MoE; None makes ``cfg.pseudo_subclasses``
    of them with :func:`pseudo_subclasses` (our extension; the paper always has labels). Every expert
    trains for ``budget.steps`` steps of ``budget.patches_per_step`` patches (``adlib.methods.simplenet``),
    the router for ``budget.router_steps`` steps of ``budget.router_batch`` images
    (``adlib.methods.routing``). Seeds, one convention for every notebook: without MoE the one
    SimpleNet is seeded ``budget.seed``, exactly as ``simplenet.fit``, so the baseline "SimpleNet" of
    notebooks 02-04 is one model; with MoE expert ``k`` is seeded ``budget.seed + 1 + k`` and the
    router ``budget.seed``. Experts learn from ground-truth subclass labels, so they do not depend on the
    router: :func:`with_router` swaps the router alone.
    """
    cfg = cfg or AdaptedMoEConfig()
    feats = torch.as_tensor(train_feats, dtype=torch.float32)  # [N, C, h, w]
    transform = L2Normalize() if cfg.norm else None
    if cfg.moe and subclasses is None:  # our extension (module docstring), fixed a priori
        subclasses = pseudo_subclasses(feats, min(cfg.pseudo_subclasses, len(feats)), seed=budget.seed)
    if cfg.moe:
        subclass_ids, labels = _expert_labels(subclasses)
    else:
        subclass_ids, labels = [-1], np.zeros(len(feats), dtype=np.int64)

    experts, centers, stds = [], [], []
    for k in progress_bar(range(len(subclass_ids)), desc="experts", disable=not budget.progress, leave=False):
        fk = feats[torch.as_tensor(labels == k)]  # [N_k, C, h, w]
        expert_seed = budget.seed + 1 + k if cfg.moe else budget.seed  # the seed convention (docstring)
        expert = simplenet.fit(fk, cfg.expert, budget.with_seed(expert_seed), transform, part=f"expert{k}")
        c, s = feature_stats(normalize(fk) if cfg.norm else fk)  # [C], [C]
        experts.append(expert)
        centers.append(c)
        stds.append(s)

    dev = torch.device(budget.device)
    model = AdaptedMoE(cfg, experts, None, torch.stack(centers).to(dev), torch.stack(stds).to(dev), subclass_ids)
    if cfg.moe:
        model = with_router(model, feats, subclasses, cfg.routing_loss, budget)
    return model


def _expert_labels(train_subclasses: np.ndarray | Tensor | None) -> tuple[list[int], np.ndarray]:
    """Sorted distinct subclass ids and the labels ``[N]`` mapped to ``0..K-1``."""
    if train_subclasses is None:
        raise ValueError("MoE needs subclass labels: pass ADSplit.subclasses or pseudo_subclasses(...)")
    sub = np.asarray(train_subclasses)
    subclass_ids = [int(s) for s in np.unique(sub)]
    return subclass_ids, np.searchsorted(subclass_ids, sub)  # [N] in 0..K-1


def with_router(
    model: AdaptedMoE,
    train_feats: Tensor,
    subclasses: np.ndarray | Tensor,
    routing_loss: str,
    budget: TrainBudget = TrainBudget(),
) -> AdaptedMoE:
    """A model with ``model``'s experts (shared, not copied) and a new router trained with ``routing_loss``.

    Table 4 compares routing losses: the experts are trained on ground-truth subclass labels and do
    not see the router, so only the router needs retraining.
    """
    if not model.cfg.moe:
        raise ValueError("a model without MoE has no router")
    subclass_ids, labels = _expert_labels(subclasses)
    if subclass_ids != model.subclass_ids:
        raise ValueError(f"subclasses {subclass_ids} differ from the model's {model.subclass_ids}")
    cfg = replace(model.cfg, routing_loss=routing_loss)
    rcfg = replace(cfg.router, loss=routing_loss, norm=cfg.norm, temperature=cfg.temperature)
    router = train_router(torch.as_tensor(train_feats, dtype=torch.float32), labels, rcfg, budget, len(subclass_ids))
    return AdaptedMoE(cfg, list(model.experts), router, model.centers, model.stds, model.subclass_ids)


def routing_weights(model: AdaptedMoE, feats: Tensor, temperature: float | None = None) -> Tensor:
    """``[N, K]`` routing weights; all ones ``[N, 1]`` without MoE."""
    if model.router is None:
        return torch.ones(len(feats), 1)
    return route(model.router, feats, model.cfg.temperature if temperature is None else temperature)


def expert_input(model: AdaptedMoE, feats: Tensor, k: int, tta: bool) -> Tensor:
    """What expert ``k`` scores: TTA to expert ``k`` (eq. 5-6), or Norm, or the raw features."""
    cfg = model.cfg
    if tta:
        l2 = cfg.norm or cfg.tta_l2_without_norm  # eq. (6), see AdaptedMoEConfig.tta_l2_without_norm
        return test_time_adapt(feats, model.centers[k], model.stds[k], cfg.tta_eps, l2)  # [N, C, h, w]
    return normalize(feats) if cfg.norm else feats  # [N, C, h, w]


TEST_TIME_SWITCHES = ("tta", "top_k", "temperature", "tta_eps", "tta_l2_without_norm")


def trained_config(cfg: AdaptedMoEConfig) -> AdaptedMoEConfig:
    """`cfg` with its test-time switches at their defaults: what determines the trained model."""
    default = AdaptedMoEConfig()
    return replace(cfg, **{k: getattr(default, k) for k in TEST_TIME_SWITCHES})


def with_test_time(model: AdaptedMoE, cfg: AdaptedMoEConfig) -> AdaptedMoE:
    """`model` under the test-time switches of `cfg` (see :func:`with_config`)."""
    return with_config(model, **{k: getattr(cfg, k) for k in TEST_TIME_SWITCHES})


def with_config(model: AdaptedMoE, **test_time: object) -> AdaptedMoE:
    """The same trained model (modules shared, not copied) under other *test-time* switches.

    Only ``tta``, ``top_k``, ``temperature``, ``tta_eps`` and ``tta_l2_without_norm`` may change: the
    others determine what was trained.
    """
    allowed = set(TEST_TIME_SWITCHES)
    if not set(test_time) <= allowed:
        raise ValueError(f"with_config changes only test-time switches {sorted(allowed)}, got {sorted(test_time)}")
    cfg = replace(model.cfg, **test_time)
    return AdaptedMoE(cfg, list(model.experts), model.router, model.centers, model.stds, model.subclass_ids)


@torch.no_grad()
def all_expert_scores(model: AdaptedMoE, test_feats: Tensor, tta: bool | None = None) -> Tensor:
    """Every expert on every image: ``[N, C, h, w] -> [N, K, h, w]`` (for top-k sweeps)."""
    tta = model.cfg.tta if tta is None else tta
    device = model.centers.device
    feats = torch.as_tensor(test_feats, dtype=torch.float32).to(device)  # [N, C, h, w]
    return torch.stack(
        [e.score(expert_input(model, feats, k, tta), transform=False) for k, e in enumerate(model.experts)],
        dim=1,
    )  # [N, K, h, w]


@torch.no_grad()
def predict(
    model: AdaptedMoE,
    test_feats: Tensor,
    tta: bool | None = None,
    top_k: int | None = None,
    temperature: float | None = None,
) -> MoEPrediction:
    """Patch anomaly scores ``[N, h, w]`` by eq. (4), with optional test-time overrides.

    ``tta``, ``top_k`` and ``temperature`` default to ``model.cfg``; changing them needs no
    retraining. Each expert scores only the images for which it is among the top-k.
    """
    cfg = replace(
        model.cfg,
        tta=model.cfg.tta if tta is None else tta,
        top_k=model.cfg.top_k if top_k is None else top_k,
        temperature=model.cfg.temperature if temperature is None else temperature,
    )
    feats = torch.as_tensor(test_feats, dtype=torch.float32)  # [N, C, h, w]
    n, _, h, w = feats.shape
    weights = routing_weights(model, feats, cfg.temperature)  # [N, K]
    mixture = topk_weights(weights, cfg.top_k)  # [N, K]
    scores = torch.zeros(n, h, w)  # [N, h, w]
    device = model.centers.device
    for k, expert in enumerate(model.experts):
        idx = torch.nonzero(mixture[:, k] > 0).squeeze(1)  # [n_k]
        if len(idx) == 0:
            continue
        x = expert_input(model, feats[idx].to(device), k, cfg.tta)  # [n_k, C, h, w]
        scores[idx] += mixture[idx, k, None, None] * expert.score(x, transform=False)  # [n_k, h, w]
    return MoEPrediction(scores, weights, mixture, cfg)


def pseudo_subclasses(feats: Tensor | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Our extension: subclass labels ``[N]`` from k-means (k clusters) on GAP features.

    Each image is summarised by its L2-normalised global-average-pooled feature ``[C]``;
    ``sklearn.cluster.KMeans(n_init=10, random_state=seed)``. Use where a data set has no subclass
    labels; the paper always uses the given subclasses.
    """
    from sklearn.cluster import KMeans

    gap = torch.as_tensor(feats, dtype=torch.float32).mean(dim=(2, 3))  # [N, C]
    gap = normalize(gap, dim=1).numpy()  # [N, C]
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(gap).astype(np.int64)  # [N]
