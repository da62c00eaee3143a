"""AnomalyMoE (Gu et al., 2025): patch, component and global experts behind one top-k router.

The paper decomposes anomaly detection into three semantic levels, with ``G`` experts each (18 in
all, ``G = 6``) that reconstruct frozen encoder features at their level (``adlib.nn.autoencoders``):

- **patch experts**: every position's feature through a noisy bottleneck, trained with the
  hard-mined cosine loss (``adlib.nn.losses.hard_mined_cosine_loss``); map ``1 - cos(f, f_hat)``;
- **component experts**: the mean feature of each component (a connected part of a k-means cluster,
  ``adlib.methods.components``) through an MLP autoencoder, loss and score ``1 - cos``, the score
  painted over the component's mask, so that an extra, missing or wrong part changes the map;
- **global experts**: an autoencoder through a 1x1 spatial bottleneck plus a local student that
  imitates it (EfficientAD); loss ``mse(AE, f) + mse(student, AE)``, map ``mean_c (AE - student)^2``.

**Router.** An MLP on the image's global feature (the paper: the CLS token; here the global average
of the features) gives logits over all ``3G`` experts; the top-k (k = 3) are chosen jointly and
weighted by a softmax over the selected (``adlib.nn.gating.topk_weights`` of the softmax). Each
selected expert runs on the image, its loss multiplied by its routing weight; the three levels'
losses are scaled 1, 0.1, 0.1 (the authors' code). Two regularisers: **ESB**
(``adlib.nn.gating.esb_loss``, weight 0.01) balances the experts' use; **EIR**
(``adlib.nn.losses.club_upper_bound``, weight 1e-4) is the CLUB bound of the mutual information between
the pooled outputs of two random patch experts and of two random global experts (layer-normalised);
the CLUB estimators learn by their own Adam (log-likelihood, gradient clip 0.1).

**Fusion.** Per level, the routing-weighted mean of its selected experts' maps; each level's map is
normalised by its 1st/99th percentile on the *training* images (stored at fit time; the authors
min-max normalise over each class's test set), multiplied by the largest routing weight in the level
(0 when none of its experts was selected) and summed. ``score`` returns this patch-level map
``[N, h, w]``; upsampling, Gaussian smoothing (sigma 4 at 256 px) and the image score (the paper: mean
of the top 1 % of pixels, ``adlib.maps.image_scores(maps, "top1")``) happen in ``adlib.maps``.

**Ours, where the authors' code does not carry over to our features** (each a config switch;
``AUTHORS_CODE`` is the config with the authors' choices):

- *Backbone.* DINOv2-reg ViT-B/14 is not available offline: the experts reconstruct our CNN patch
  features (``adlib.features``: EfficientNet-Lite0 stages 2+3), standardised per channel with the
  training mean and std (the channels' scales differ by orders of magnitude). Components are found on
  the unstandardised features (``component_features``).
- *Routing* (``router_signal``). In the authors' code one term, ``sum_e w_e * scale_e * loss_e``, trains
  experts and router, so the router learns to send images to the level with the smallest *scaled*
  loss. On our features that is never the patch level: within ~10 steps every image routes to
  component and global experts only, and ESB cannot bring the others back (their softmax probability,
  and with it their gradient, is ~0). ``"relative"`` keeps the experts' term and gives the router
  ``sum_e w_e * loss_e / running_mean(loss of e's level)``: levels compete on relative error.
- *Global map* (``global_map``). On our features ``mean_c (AE - student)^2`` grows with the feature
  energy, which is *lower* on the synthetic defects, so the map ranks normal images above anomalous
  ones (I-AUROC 0.1-0.4 on the built-in textures); ``"cosine+ae"`` = ``1 - cos(AE, student) +
  1 - cos(AE, f)`` is scale-free, like the other two levels' maps.
- The per-level weighted *mean* of the selected experts' maps (authors: the weighted sum, which scales
  a map by the level's total weight before the largest weight scales it again). Training counts
  ``budget.steps`` optimizer steps of ``batch_size`` images (authors: 100k iterations of 8 images per
  GPU, StableAdamW with amsgrad; here AdamW with the same lr, warm-up and cosine decay to 0.01 x lr).

One model for all categories: the caller concatenates training features of several data sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.autoencoders import (
    GLOBAL_MAPS,
    ComponentAutoencoder,
    GlobalAutoencoder,
    PatchExpert,
    Student,
    component_expert_scores,
    global_expert_outputs,
    patch_expert_outputs,
)
from ..nn.gating import Z_LOSSES, esb_loss, topk_weights
from ..nn.losses import CLUBEstimator, club_log_likelihood, club_upper_bound
from ..training import Optim, Schedule, Training, train
from . import components as comp
from .base import TrainBudget

LEVELS = ("patch", "component", "global")
LOSS_TERMS = ("total", "reconstruction", *LEVELS, "routing", "esb", "eir", "estimator")


@dataclass
class AnomalyMoEConfig:
    """AnomalyMoE hyper-parameters: the authors' code (CASIA-LMC-Lab/AnomalyMoE ``train.py``) unless "ours"."""

    levels: tuple[str, ...] = LEVELS  # paper: all three; any non-empty subset (ablations)
    experts_per_level: int = 6  # authors: 6 patch, 6 global, 6 component experts
    top_k: int = 3  # authors: --top_k 3, chosen jointly over all experts
    router_hidden: int = 256  # authors' GatingNetwork: Linear(768, 256) + ReLU + Linear(256, 18)
    # What the router learns from. "loss" (authors): the routing-weighted, scaled expert losses, so it
    # prefers the level whose scaled loss is smallest (on our features: never the patch level). "relative"
    # (ours, default): each loss divided by a running mean of its level's loss (docstring, "Routing").
    router_signal: str = "relative"
    esb_weight: float = 0.01  # authors: --lambda_esb; 0 = off
    capacity_factor: float = 4.0  # authors: --capacity_factor (capacity = 4 B / N images)
    z_loss: str = "logits"  # authors: mean(logits^2); "logsumexp": ST-MoE (adlib.nn.gating.esb_loss)
    eir_weight: float = 1e-4  # authors: --lambda_eir; 0 = off
    # What the CLUB estimators learn from: False (ours so far) the step's outputs before the experts' update,
    # detached; True (the authors) a fresh forward of the same two experts after the update, without gradients.
    eir_fresh: bool = False
    clip: float | None = None  # max gradient norm of experts + router; authors: 0.1; None (ours so far): no clipping
    loss_scales: tuple[float, float, float] = (1.0, 0.1, 0.1)  # authors: patch, component, global loss scales
    patch_hidden: int = 128  # ours: a bottleneck narrower than C = 152 (authors: 4 x 768 wide, for CPU cost here)
    patch_dropout: float = 0.2  # authors: bMlp(768, 3072, 768, drop=0.2)
    patch_dropout_input: bool = False  # authors: dropout on the MLP's input only; False (ours so far): after each layer
    patch_mix: bool = True  # ours: a depthwise 3x3 mix in place of the authors' 8 linear-attention ViT blocks
    hard_mining_p: float = 0.9  # authors: --p_hm (the easiest 90 % of positions ...)
    hard_mining_factor: float = 0.1  # authors: --factor_hm (... pass 0.1 x their gradient)
    component_clusters: int = 5  # authors' segment_image.py: DEFAULT_K_VALUE = 5
    component_hidden: tuple[int, ...] = (256, 64)  # authors' ComponentAutoencoder: 768-256-64-64-64-256-768
    component_bottleneck: int = 64  # authors (see component_hidden)
    component_dropout: float = 0.1  # authors: Dropout(0.1) before each decoder layer
    component_dilation: int = 3  # authors: 5 at 28x28 positions; ~3 at our 16x16
    component_min_area: float = 0.005  # ours: parts under 0.5 % of the positions are dropped
    component_max_border_sides: int = 1  # ours: parts touching 2+ image sides are background (authors: 3+ corners)
    component_whole_if_none: bool = True  # ours: an image without parts is one component (see components.py)
    kmeans_samples: int = 20000  # ours: positions k-means sees (authors: a 1 % coreset of every image)
    global_hidden: int = 32  # ours: conv width of the global autoencoder and student (authors: 128 on images)
    global_latent: int = 64  # EfficientAD's autoencoder bottleneck: 64 channels at 1x1
    global_dropout: float = 0.2  # EfficientAD / authors: Dropout(0.2) in the autoencoder's decoder
    # The global map. "mse" (authors): mean_c (AE - student)^2. Ours: "cosine" = 1 - cos(AE, student);
    # "cosine+ae" (default) = that + 1 - cos(AE, f): on our features the MSE maps invert (docstring, "Global map").
    global_map: str = "cosine+ae"
    batch_size: int = 8  # authors: --batch_size 8 (per GPU; they train on several GPUs)
    lr: float = 5e-4  # authors: --lr 5e-4 (experts, router and the CLUB estimators)
    weight_decay: float = 1e-4  # authors: StableAdamW and the estimators' Adam
    warmup_steps: int = 100  # authors' WarmCosineScheduler; ours: at most steps // 10
    final_lr_factor: float = 0.01  # authors: cosine decay to 0.01 x lr
    estimator_clip: float = 0.1  # authors: clip_grad_norm_(CLUB estimator, 0.1)
    norm_quantiles: tuple[float, float] = (0.01, 0.99)  # ours: training percentiles that map to 0 and 1
    norm_images: int = 512  # ours: training images (at most) whose maps give the normalisation statistics
    center: bool = True  # ours: subtract the training mean before dividing by the training std
    chunk: int = 64  # images per forward pass at test time (memory bound only)


AUTHORS_CODE = AnomalyMoEConfig(router_signal="loss", global_map="mse")  # the authors' choices where ours differ


class AnomalyMoE(nn.Module):
    """Router, experts of ``cfg.levels`` (in that order), standardisation, k-means centres, norm statistics."""

    mean: Tensor
    std: Tensor
    centres: Tensor
    norm_lo: Tensor
    norm_hi: Tensor

    def __init__(self, cfg: AnomalyMoEConfig, channels: int, centres: Tensor | None = None) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg, g = cfg, cfg.experts_per_level
        on = set(cfg.levels)
        self.patch = nn.ModuleList(
            PatchExpert(channels, cfg.patch_hidden, cfg.patch_dropout, cfg.patch_mix, cfg.patch_dropout_input)
            for _ in range(g * ("patch" in on))
        )
        self.component = nn.ModuleList(
            ComponentAutoencoder(channels, cfg.component_hidden, cfg.component_bottleneck, cfg.component_dropout)
            for _ in range(g * ("component" in on))
        )
        self.global_ae = nn.ModuleList(
            GlobalAutoencoder(channels, cfg.global_hidden, cfg.global_latent, cfg.global_dropout)
            for _ in range(g * ("global" in on))
        )
        self.student = nn.ModuleList(Student(channels, cfg.global_hidden) for _ in range(g * ("global" in on)))
        n_experts = g * len(cfg.levels)
        self.router = nn.Sequential(
            nn.Linear(channels, cfg.router_hidden), nn.ReLU(), nn.Linear(cfg.router_hidden, n_experts)
        )
        for m in self.router:  # the authors' init: near-uniform routing at the start
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03)
                nn.init.zeros_(m.bias)
        self.register_buffer("mean", torch.zeros(channels))  # [C]  training mean
        self.register_buffer("std", torch.ones(channels))  # [C]  training std
        self.register_buffer("centres", centres if centres is not None else torch.zeros(0, channels))  # [k, C]
        self.register_buffer("norm_lo", torch.zeros(len(cfg.levels)))  # [L]  training percentile -> 0
        self.register_buffer("norm_hi", torch.ones(len(cfg.levels)))  # [L]  training percentile -> 1
        self.loss_history: dict[str, Tensor] = {}  # [steps] per term of LOSS_TERMS, set by fit

    @property
    def expert_names(self) -> list[str]:
        return [f"{lvl} {i}" for lvl in self.cfg.levels for i in range(self.cfg.experts_per_level)]

    def expert_ids(self, level: str) -> range:
        """Indices of ``level``'s experts among the router's outputs."""
        start = self.cfg.levels.index(level) * self.cfg.experts_per_level
        return range(start, start + self.cfg.experts_per_level)

    def standardize(self, feats: Tensor) -> Tensor:
        """``(f - mean) / std`` per channel, training statistics: ``[N, C, h, w] -> [N, C, h, w]``."""
        return (feats - self.mean[:, None, None]) / self.std[:, None, None]

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[N, E]`` and top-k routing weights ``[N, E]`` (softmax over the selected) of standardised ``x``."""
        logits = self.router(x.mean(dim=(2, 3)))  # [N, E]  from the global feature
        return logits, topk_weights(torch.softmax(logits, dim=1), self.cfg.top_k)  # [N, E], [N, E]

    def score(self, feats: Tensor) -> Tensor:
        """Fused patch anomaly scores ``[N, C, h, w] -> [N, h, w]`` (on CPU)."""
        return predict(self, feats).fused

    def level_maps(self, feats: Tensor, normalized: bool = True) -> dict[str, Tensor]:
        """One map ``[N, h, w]`` per level: training-normalised (as fused) or the raw weighted-mean errors."""
        pred = predict(self, feats)
        return pred.normalized if normalized else pred.raw


def check_config(cfg: AnomalyMoEConfig) -> None:
    """One-line errors for configurations that cannot work."""
    if not cfg.levels or len(set(cfg.levels)) != len(cfg.levels) or not set(cfg.levels) <= set(LEVELS):
        raise ValueError(f"levels must be distinct names from {LEVELS}, got {cfg.levels!r}")
    if cfg.experts_per_level < 1:
        raise ValueError(f"experts_per_level must be >= 1, got {cfg.experts_per_level}")
    if not 1 <= cfg.top_k <= cfg.experts_per_level * len(cfg.levels):
        raise ValueError(
            f"top_k must be in 1..{cfg.experts_per_level * len(cfg.levels)} (all experts), got {cfg.top_k}"
        )
    if cfg.router_signal not in ("loss", "relative"):
        raise ValueError(f"router_signal must be 'loss' or 'relative', got {cfg.router_signal!r}")
    if cfg.z_loss not in Z_LOSSES:
        raise ValueError(f"z_loss must be one of {sorted(Z_LOSSES)}, got {cfg.z_loss!r}")
    if cfg.clip is not None and cfg.clip <= 0:
        raise ValueError(f"clip must be > 0 or None, got {cfg.clip}")
    if cfg.global_map not in GLOBAL_MAPS:
        raise ValueError(f"global_map must be one of {GLOBAL_MAPS}, got {cfg.global_map!r}")


# ----------------------------------------------------------------------------- the experts' passes


def patch_pass(model: AnomalyMoE, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Patch expert ``i`` on ``x: [n, C, h, w]``: loss ``[n]``, map ``[n, h, w]``, pooled output ``[n, C]``."""
    return patch_expert_outputs(model.patch[i], x, model.cfg.hard_mining_p, model.cfg.hard_mining_factor)


def global_pass(model: AnomalyMoE, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Global expert ``i``: loss ``[n]``, map (``cfg.global_map``) ``[n, h, w]``, pooled student output ``[n, C]``."""
    return global_expert_outputs(model.global_ae[i], model.student[i], x, model.cfg.global_map)


def component_pass(model: AnomalyMoE, i: int, f: Tensor) -> Tensor:
    """Component expert ``i`` on pooled component features ``f: [m, C]``: ``1 - cos`` ``[m]`` (loss and score)."""
    return component_expert_scores(model.component[i], f)  # [m]


def component_features(model: AnomalyMoE, x: Tensor) -> tuple[comp.Components, Tensor]:
    """Components of standardised ``x: [n, C, h, w]`` and their pooled (standardised) features ``[M, C]``.

    The components are found on the features before standardisation (as the centres were): standardised,
    a background near the training mean is a short, noisy vector whose direction clusters at random.
    """
    cfg = model.cfg
    raw = x * model.std[:, None, None] + model.mean[:, None, None]  # [n, C, h, w]
    comps = comp.components_of(
        raw, model.centres, cfg.component_min_area, cfg.component_max_border_sides, cfg.component_whole_if_none
    )
    return comps, comp.pool(x, comps, cfg.component_dilation)  # [M, h, w], [M, C]


# ----------------------------------------------------------------------------- maps and fusion


@dataclass
class AnomalyMoEPrediction:
    """Output of :func:`predict` (all on CPU)."""

    fused: Tensor  # [N, h, w]  sum over levels of group weight x normalised map
    raw: dict[str, Tensor]  # level -> [N, h, w]  routing-weighted mean of its selected experts' maps (0 if none)
    normalized: dict[str, Tensor]  # level -> [N, h, w]  raw mapped by the training percentiles
    group_weights: dict[str, Tensor]  # level -> [N]  the largest routing weight in the level (0: none selected)
    weights: Tensor  # [N, E]  top-k routing weights (columns: model.expert_names)


def normalize_level(raw: Tensor, lo: Tensor | float, hi: Tensor | float) -> Tensor:
    """``(raw - lo) / (hi - lo)``: training percentiles ``lo, hi`` go to 0 and 1."""
    return (raw - lo) / max(float(hi - lo), 1e-12)


@torch.no_grad()
def predict(model: AnomalyMoE, feats: Tensor, levels: tuple[str, ...] | None = None) -> AnomalyMoEPrediction:
    """Level maps, routing and the fused map for ``feats: [N, C, h, w]``; ``levels`` fuses a subset (test time)."""
    was_training = model.training
    model.eval()
    levels = model.cfg.levels if levels is None else levels
    if not set(levels) <= set(model.cfg.levels):
        raise ValueError(f"levels {levels!r} must be among the model's {model.cfg.levels!r}")
    dev = model.mean.device
    raw: dict[str, list[Tensor]] = {lvl: [] for lvl in model.cfg.levels}
    weights = []
    for s in range(0, len(feats), model.cfg.chunk):
        x = model.standardize(feats[s : s + model.cfg.chunk].to(device=dev, dtype=torch.float32))  # [b, C, h, w]
        n, _, h, w = x.shape
        _, wts = model.route(x)  # [b, E]
        weights.append(wts.cpu())
        for lvl in model.cfg.levels:
            acc, wsum = x.new_zeros(n, h, w), x.new_zeros(n)  # [b, h, w], [b]
            if lvl == "component":
                comps, pooled = component_features(model, x)  # [M, h, w], [M, C]
            for i, e in enumerate(model.expert_ids(lvl)):
                rows = torch.nonzero(wts[:, e] > 0).squeeze(1)  # [r]
                if len(rows) == 0:
                    continue
                if lvl == "component":
                    sub, idx = comp.subset(comps, rows, n)
                    amap = comp.paint(component_pass(model, i, pooled[idx]), sub, len(rows))  # [r, h, w]
                else:
                    amap = (patch_pass if lvl == "patch" else global_pass)(model, i, x[rows])[1]  # [r, h, w]
                acc[rows] += wts[rows, e, None, None] * amap  # [r, h, w]
                wsum[rows] += wts[rows, e]
            raw[lvl].append((acc / wsum.clamp_min(1e-12)[:, None, None]).cpu())  # [b, h, w]
    model.train(was_training)
    wts_all = torch.cat(weights)  # [N, E]
    raw_all = {lvl: torch.cat(m) for lvl, m in raw.items()}  # level -> [N, h, w]
    normed = {
        lvl: normalize_level(raw_all[lvl], model.norm_lo[j].cpu(), model.norm_hi[j].cpu())
        for j, lvl in enumerate(model.cfg.levels)
    }
    gw = {lvl: wts_all[:, list(model.expert_ids(lvl))].max(dim=1).values for lvl in model.cfg.levels}  # level -> [N]
    fused = sum(gw[lvl][:, None, None] * normed[lvl] for lvl in levels)  # [N, h, w]
    return AnomalyMoEPrediction(fused, raw_all, normed, gw, wts_all)  # type: ignore[arg-type]


def set_norm_stats(model: AnomalyMoE, train_feats: Tensor, seed: int = 0) -> None:
    """Store each level's ``cfg.norm_quantiles`` of its raw maps on (at most ``norm_images``) training images.

    Only images whose top-k includes one of the level's experts count (elsewhere the map is undefined);
    a level never selected keeps ``(0, 1)``.
    """
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_feats), generator=g)[: cfg.norm_images].sort().values  # [n]
    pred = predict(model, train_feats[idx])
    for j, lvl in enumerate(cfg.levels):
        vals = pred.raw[lvl][pred.group_weights[lvl] > 0].flatten()  # [n_active * h * w]
        if len(vals) == 0:
            continue
        lo, hi = torch.quantile(vals.double(), torch.tensor(cfg.norm_quantiles, dtype=torch.float64)).float()
        model.norm_lo[j], model.norm_hi[j] = lo, hi if hi > lo else lo + 1


# ----------------------------------------------------------------------------- training


def eir_experts(model: AnomalyMoE, g: torch.Generator) -> list[tuple[str, int, int]]:
    """Two random experts ``(level, i, j)`` of the patch and of the global level (drawn from ``g``)."""
    out = []
    for lvl in ("patch", "global"):
        if lvl in model.cfg.levels and model.cfg.experts_per_level >= 2:
            i, j = torch.randperm(model.cfg.experts_per_level, generator=g)[:2].tolist()
            out.append((lvl, i, j))
    return out


def eir_outputs(model: AnomalyMoE, x: Tensor, experts: list[tuple[str, int, int]]) -> list[tuple[str, Tensor, Tensor]]:
    """Layer-normalised pooled outputs ``[B, C]`` of each pair of :func:`eir_experts` on ``x``."""
    out = []
    for lvl, i, j in experts:
        run = patch_pass if lvl == "patch" else global_pass
        a, b = run(model, i, x)[2], run(model, j, x)[2]  # [B, C], [B, C]
        out.append((lvl, F.layer_norm(a, a.shape[1:]), F.layer_norm(b, b.shape[1:])))
    return out


def fit(train_feats: Tensor, cfg: AnomalyMoEConfig | None = None, budget: TrainBudget = TrainBudget()) -> AnomalyMoE:
    """Train AnomalyMoE on normal features ``[N, C, h, w]`` for ``budget.steps`` steps of ``cfg.batch_size`` images.

    Per step: route the minibatch, run each expert on the images that selected it, sum the levels'
    routing-weighted losses (x ``loss_scales``), add ``esb_weight`` x ESB and ``eir_weight`` x EIR, one
    AdamW step on experts and router; then one Adam step of the CLUB estimators on the detached pooled
    outputs (``router_signal="relative"`` adds the router's own term). Components (k-means on the
    training features) are found once, before training. Then the normalisation statistics are measured
    on the training images (:func:`set_norm_stats`).
    Deterministic given ``budget.seed`` (k-means, initial weights, dropout, minibatches, EIR pairs).
    Returns the model in eval mode on ``budget.device`` with ``loss_history`` (``LOSS_TERMS`` -> ``[steps]``).
    """
    cfg = cfg or AnomalyMoEConfig()
    check_config(cfg)
    if train_feats.ndim != 4 or budget.steps < 1:
        raise ValueError(
            f"train_feats must be [N, C, h, w] and steps >= 1, got {tuple(train_feats.shape)}, {budget.steps}"
        )
    dev = torch.device(budget.device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(budget.seed)  # initial weights and dropout
        return _fit(train_feats.to(device=dev, dtype=torch.float32), cfg, budget, dev)


def _fit(feats: Tensor, cfg: AnomalyMoEConfig, budget: TrainBudget, dev: torch.device) -> AnomalyMoE:
    n, c, _, _ = feats.shape
    steps, g = budget.steps, torch.Generator().manual_seed(budget.seed)  # g: minibatches and EIR pairs
    mean = feats.mean(dim=(0, 2, 3)) if cfg.center else feats.new_zeros(c)  # [C]
    std = feats.std(dim=(0, 2, 3)).nan_to_num(1.0).clamp_min(1e-6)  # [C]
    x_all = (feats - mean[:, None, None]) / std[:, None, None]  # [N, C, h, w]
    centres = None
    if "component" in cfg.levels:  # found once: the features are frozen
        centres = comp.fit_centres(feats, cfg.component_clusters, budget.seed, cfg.kmeans_samples).to(dev)  # [k, C]
    model = AnomalyMoE(cfg, c, centres).to(dev)
    model.mean.copy_(mean)
    model.std.copy_(std)
    if centres is not None:
        train_comps, train_pooled = component_features(model, x_all)  # [M, h, w], [M, C]
    estimators = nn.ModuleDict({lvl: CLUBEstimator(c) for lvl in ("patch", "global") if lvl in cfg.levels}).to(dev)
    warmup = min(cfg.warmup_steps, steps // 10)
    optims = [
        Optim(
            model.parameters(),
            "adamw",
            cfg.lr,
            cfg.weight_decay,
            Schedule("warmup_cosine", cfg.final_lr_factor, warmup=warmup),
            clip=cfg.clip,
        )
    ]
    if len(estimators):  # the CLUB estimators learn q(y | x) by their own optimiser, on their own term
        optims.append(
            Optim(estimators.parameters(), "adam", cfg.lr, cfg.weight_decay, clip=cfg.estimator_clip, term="estimator")
        )
    scales = dict(zip(LEVELS, cfg.loss_scales, strict=True))
    running: dict[str, Tensor | None] = dict.fromkeys(LEVELS)

    def batch_loss(idx: Tensor, step: int) -> dict[str, Tensor | Callable[[], Tensor | None]]:
        x = x_all[idx.to(dev)]  # [B, C, h, w]
        b = len(idx)
        logits, wts = model.route(x)  # [B, E], [B, E]
        if centres is not None:
            batch_comps, in_batch = comp.subset(train_comps, idx, n)  # the batch's components, owners 0..B-1
        parts = []  # (level, routing weights [m], losses [m], divisor): the batch's expert losses
        for lvl in cfg.levels:
            for i, e in enumerate(model.expert_ids(lvl)):
                rows = torch.nonzero(wts[:, e] > 0).squeeze(1)  # [r]  images that selected expert e
                if len(rows) == 0:
                    continue
                if lvl == "component":  # over the batch's components (each with its image's weight)
                    sub, k = comp.subset(batch_comps, rows, b)
                    if len(k):
                        loss = component_pass(model, i, train_pooled[in_batch[k]])  # [m]
                        parts.append((lvl, wts[rows[sub.owner], e], loss, len(batch_comps)))
                    continue
                loss = (patch_pass if lvl == "patch" else global_pass)(model, i, x[rows])[0]  # [r]
                parts.append((lvl, wts[rows, e], loss, b))  # a mean over the batch, 0 where not selected
        for lvl in cfg.levels:  # running mean of each level's loss (the "relative" router signal)
            seen = [loss.detach() for lv, _, loss, _ in parts if lv == lvl]
            if seen:
                m = torch.cat(seen).mean()
                running[lvl] = m if running[lvl] is None else 0.9 * running[lvl] + 0.1 * m
        terms = {lvl: x.new_zeros(()) for lvl in LEVELS}  # the experts' losses, unscaled
        routing = x.new_zeros(())  # the router's own term ("relative" only)
        for lvl, w_sel, loss, div in parts:
            if cfg.router_signal == "loss":  # the authors: one term trains experts and router
                terms[lvl] = terms[lvl] + (w_sel * loss).sum() / div
            else:
                terms[lvl] = terms[lvl] + (w_sel.detach() * loss).sum() / div
                routing = routing + (w_sel * loss.detach() / running[lvl].clamp_min(1e-12)).sum() / div
        recon = sum(scales[lvl] * terms[lvl] for lvl in LEVELS)
        esb = esb_loss(logits, cfg.top_k, cfg.capacity_factor, cfg.z_loss)
        chosen = eir_experts(model, g) if cfg.eir_weight > 0 else []
        pairs = eir_outputs(model, x, chosen)
        eir = sum((club_upper_bound(estimators[lvl], a, p) for lvl, a, p in pairs), x.new_zeros(())) / max(
            1, len(pairs)
        )

        def estimator() -> Tensor | None:  # after the experts' step: q(y | x) on the detached outputs
            if not pairs:
                return None
            if cfg.eir_fresh:  # the authors: the same two experts again, after their update, without gradients
                with torch.no_grad():
                    seen = eir_outputs(model, x, chosen)
            else:
                seen = pairs
            return -sum(club_log_likelihood(estimators[lvl], a.detach(), p.detach()) for lvl, a, p in seen) / len(seen)

        total = recon + routing + cfg.esb_weight * esb + cfg.eir_weight * eir
        return {
            "total": total,
            "reconstruction": recon,
            **terms,
            "routing": routing,
            "esb": esb,
            "eir": eir,
            "estimator": estimator,
        }

    def get_running() -> dict:
        return dict(running)

    result = train(
        Training(
            "AnomalyMoE",
            {"model": model, "estimators": estimators},
            optims,
            n,
            cfg.batch_size,
            batch_loss,
            g,
            f"lower lr={cfg.lr} or check the features for NaN/inf",
            terms=LOSS_TERMS,
            extra_state=(get_running, running.update),
        ),
        budget,
    )
    model.loss_history = result.history
    set_norm_stats(model, feats, budget.seed)
    return model
