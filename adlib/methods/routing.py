"""Routing network of Adapted-MoE (Lei, Chen et al., 2024), eq. (1)-(2), and its routing losses.

**Embedding, eq. (1).** A projection layer (3x3 convolution ``W``, ``b``) and global average
pooling map the backbone feature map ``X_i: [C, H, W]`` of image ``i`` to an embedding::

    x_i = GAP(sigma(W * X_i + b))                       (1)

with ``sigma`` = ReLU. With the paper's **Norm** switch the embedding is L2-normalised,
``x_i <- x_i / ||x_i||``.

**Routing loss, eq. (2)** (the "center loss" of Wen et al., ECCV 2016)::

    L_routing = alpha * ||x_i - c_{y_i}||^2 + (1 - alpha) * CE(w x_i, y_i)   (2)

with subclass centres ``c_k``, subclass labels ``y_i`` and a classifier matrix ``w: [C, n]``
(here ``nn.Linear(C, n, bias=False)``). The paper sums over the minibatch; we average, so the
learning rate does not depend on the batch size. The paper gives no value for ``alpha``; we use 0.5.

**Centre update (our choice, documented).** The paper says ``c_k`` "is updated per steps". We follow
Wen et al. 2016: centres are *not* trained by gradient; after every step each centre moves towards
the mean of its subclass's embeddings in the minibatch::

    c_j <- c_j - rate * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)      (rate = 0.5, Wen et al.)

Centres start at the subclass means of the initial network's embeddings. After training they are
set to the exact subclass means of the final embeddings over the whole training set; those are the
``c_k`` used for routing (and they exist for every loss, so softmax-trained routers route the same way).

**Routing at inference.** ``x_i`` is routed by cosine similarity to the centres, turned into weights
by a softmax: ``w_ik = softmax_k(cos(x_i, c_k) / T)``. The paper's softmax has no temperature
(``T = 1``), which makes weights of a top-k mixture nearly uniform; ``T`` is exposed to explore.

**Loss choices** (Table 4 compares the first two; the third is our addition, no paper number):
``"softmax"`` = CE only; ``"center"`` = eq. (2); ``"ranked_list"`` = the ranked list loss of
Wang et al. (CVPR 2019), mixed with CE the same way as eq. (2): ``alpha * L_RLL + (1 - alpha) * CE``
so the classifier is still trained.

**The authors' released code differs:** it computes the centre term but leaves it out of the total
loss and trains routing with an NLL loss on the subclass index (i.e. our ``"softmax"`` choice). We
implement the paper's eq. (2) and keep the released behaviour available as ``loss="softmax"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.losses import center_loss, ranked_list_loss, update_centers
from ..training import Optim, Training, train
from .base import TrainBudget

ROUTING_LOSSES = ("softmax", "center", "ranked_list")


@dataclass
class RouterConfig:
    """Routing network and loss settings (paper values where the paper gives one)."""

    emb_dim: int | None = None  # embedding size; None = C, as in the paper (x_i in R^C)
    norm: bool = True  # L2-normalise the embedding (the paper's "Norm")
    loss: str = "center"  # "softmax" | "center" (eq. 2) | "ranked_list"
    alpha: float = 0.5  # eq. (2) weight of the metric term; not given in the paper
    center_rate: float = 0.5  # Wen et al. 2016 centre update rate
    rll_boundary: float = 1.2  # ranked list loss alpha (Wang et al. 2019)
    rll_margin: float = 0.4  # ranked list loss m: positives are pulled inside alpha - m
    rll_temperature: float = 10.0  # T of the negative weights exp(T * (alpha - d))
    rll_lambda: float = 1.0  # L_RLL = L_pos + lambda * L_neg
    lr: float = 1e-3  # Adam; the paper's 1e-4..2e-4 is for its 160-epoch schedule
    temperature: float = 1.0  # routing softmax temperature T (paper: plain softmax, T = 1)


class RoutingNetwork(nn.Module):
    """3x3 conv + ReLU + GAP -> embedding ``x`` (eq. 1), optional L2 norm, classifier ``w``."""

    centers: Tensor

    def __init__(
        self, in_ch: int, emb_dim: int | None, n_classes: int, norm: bool = True, temperature: float = 1.0
    ) -> None:
        super().__init__()
        emb_dim = emb_dim or in_ch
        self.norm = norm
        self.temperature = temperature
        self.proj = nn.Conv2d(in_ch, emb_dim, kernel_size=3, padding=1)  # W_i, b_i of eq. (1)
        self.classifier = nn.Linear(emb_dim, n_classes, bias=False)  # w in R^{C x n} of eq. (2)
        self.register_buffer("centers", torch.zeros(n_classes, emb_dim))  # c_k

    @property
    def n_classes(self) -> int:
        return self.classifier.out_features

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Xavier-normal weights, zero bias, drawn from ``generator``."""
        nn.init.xavier_normal_(self.proj.weight, generator=generator)
        nn.init.zeros_(self.proj.bias)
        nn.init.xavier_normal_(self.classifier.weight, generator=generator)

    def embed(self, feats: Tensor) -> Tensor:
        """Eq. (1): ``[N, C, h, w] -> x: [N, E]`` (unit-norm when ``norm``)."""
        z = F.relu(self.proj(feats))  # [N, E, h, w]
        x = z.mean(dim=(2, 3))  # [N, E]  global average pooling
        return F.normalize(x, dim=1) if self.norm else x  # [N, E]

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Embedding and classifier logits: ``([N, E], [N, K])``."""
        x = self.embed(feats)  # [N, E]
        return x, self.classifier(x)  # [N, E], [N, K]

    def route_embeddings(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """Routing weights ``softmax_k(cos(x, c_k) / T)``: ``[N, E] -> [N, K]``."""
        t = self.temperature if temperature is None else temperature
        cos = F.normalize(x, dim=1) @ F.normalize(self.centers, dim=1).T  # [N, K]
        return torch.softmax(cos / t, dim=1)  # [N, K]


def routing_loss(router: RoutingNetwork, x: Tensor, logits: Tensor, labels: Tensor, cfg: RouterConfig) -> Tensor:
    """The loss selected by ``cfg.loss`` (see module docstring)."""
    if cfg.loss == "softmax":
        return F.cross_entropy(logits, labels)
    if cfg.loss == "center":
        return center_loss(x, logits, labels, router.centers, cfg.alpha)
    if cfg.loss == "ranked_list":
        rll = ranked_list_loss(
            F.normalize(x, dim=1),
            labels,
            cfg.rll_boundary,
            cfg.rll_margin,
            cfg.rll_temperature,
            cfg.rll_lambda,
        )
        return cfg.alpha * rll + (1 - cfg.alpha) * F.cross_entropy(logits, labels)
    raise ValueError(f"loss must be one of {ROUTING_LOSSES}, got {cfg.loss!r}")


# ----------------------------------------------------------------------------- training / routing


@torch.no_grad()
def embed_all(router: RoutingNetwork, feats: Tensor, chunk: int = 64) -> Tensor:
    """Embeddings of all images, in chunks: ``[N, C, h, w] -> [N, E]`` (on CPU)."""
    device = router.centers.device
    out = [router.embed(feats[i : i + chunk].to(device, torch.float32)).cpu() for i in range(0, len(feats), chunk)]
    return torch.cat(out)  # [N, E]


def class_means(x: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Mean embedding per class ``[K, E]`` (zeros for a class without samples)."""
    onehot = F.one_hot(labels, n_classes).to(x.dtype)  # [N, K]
    return (onehot.T @ x) / onehot.sum(dim=0).clamp_min(1)[:, None]  # [K, E]


def train_router(
    feats: Tensor,
    labels: Tensor | np.ndarray,
    cfg: RouterConfig | None = None,
    budget: TrainBudget = TrainBudget(),
    n_classes: int | None = None,
    part: str = "router",
) -> RoutingNetwork:
    """Train the routing network on feature maps ``[N, C, h, w]`` with subclass labels ``[N]``.

    ``labels`` must be ``0..K-1`` (``K = n_classes``, default ``max + 1``). ``budget.router_steps``
    Adam steps, each on the next ``budget.router_batch`` images of a shuffled list of all training
    images (reshuffled when used up); centres updated after each step (Wen et al.), final centres =
    subclass means of the final embeddings. ``router_steps=0`` gives the untrained router.
    Deterministic given ``budget.seed``. Returns the router on ``budget.device`` in eval mode, with
    ``loss_history: [steps]`` (CPU) attached. Trained by the one loop (``adlib.training``: the NaN stop,
    checkpoints in ``budget.checkpoint/<part>.pt``, resume).
    """
    cfg = cfg or RouterConfig()
    if cfg.loss not in ROUTING_LOSSES:
        raise ValueError(f"loss must be one of {ROUTING_LOSSES}, got {cfg.loss!r}")
    device = torch.device(budget.device)
    steps = budget.router_steps
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)  # [N]
    k = int(n_classes if n_classes is not None else labels.max().item() + 1)
    n, c = feats.shape[:2]
    g = torch.Generator().manual_seed(budget.seed)

    router = RoutingNetwork(c, cfg.emb_dim, k, cfg.norm, cfg.temperature)
    router.reset_parameters(g)
    router.to(device)
    router.centers.copy_(class_means(embed_all(router, feats), labels, k).to(device))  # [K, E]
    step_batch: dict[str, Tensor] = {}  # the step's embeddings and labels, for the centre update

    def batch_loss(idx: Tensor, step: int) -> dict[str, Tensor]:
        xb = feats[idx].to(device, torch.float32)  # [B, C, h, w]
        yb = labels[idx].to(device)  # [B]
        x, logits = router(xb)  # [B, E], [B, K]
        step_batch.update(x=x.detach(), y=yb)
        return {"total": routing_loss(router, x, logits, yb, cfg)}

    def move_centers() -> None:  # Wen et al.: after each step, centres move towards the batch's embeddings
        router.centers.copy_(update_centers(router.centers, step_batch["x"], step_batch["y"], cfg.center_rate))

    hint = f"lower the learning rate (RouterConfig.lr={cfg.lr}) or check the training features for NaN/inf"
    history = torch.empty(0)
    if steps > 0:
        t = Training(
            f"routing network ({cfg.loss} loss)",
            {"router": router},
            [Optim(router.parameters(), "adam", cfg.lr)],
            n,
            budget.router_batch,
            batch_loss,
            g,
            hint,
            after_step=move_centers,
        )
        history = train(t, replace(budget, steps=steps), part).history["total"]
    router.eval()
    router.centers.copy_(class_means(embed_all(router, feats), labels, k).to(device))  # [K, E]
    router.loss_history = history  # type: ignore[assignment]
    return router


@torch.no_grad()
def route(router: RoutingNetwork, feats: Tensor, temperature: float | None = None) -> Tensor:
    """Routing weights ``[N, K]`` (rows sum to 1) for feature maps ``[N, C, h, w]``, on CPU."""
    router.eval()
    x = embed_all(router, feats)  # [N, E]
    return router.route_embeddings(x.to(router.centers.device), temperature).cpu()  # [N, K]


def routing_accuracy(weights: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Fraction of images whose largest routing weight is on their own subclass."""
    w = np.asarray(weights)
    return float((w.argmax(axis=1) == np.asarray(labels)).mean())
