"""SimpleNet (Liu et al., CVPR 2023): the baseline and the expert of Adapted-MoE.

SimpleNet works on frozen backbone patch features. Per patch feature ``f`` (a C-vector):

1. a **feature adaptor** ``G``, one ``Linear(C, C)``, maps the ImageNet features to a
   target-domain space: ``q = G(f)``;
2. an **anomalous feature generator** adds Gaussian noise to adapted *normal* features:
   ``q- = q + eps, eps ~ N(0, sigma^2 I)`` with ``sigma = 0.015``;
3. a **discriminator** ``D`` = ``Linear(C, 1024) + BatchNorm1d + LeakyReLU(0.2) + Linear(1024, 1)``
   scores normality;
4. the **truncated l1 loss** pushes ``D(q) >= th+`` and ``D(q-) <= -th-`` with ``th+ = th- = 0.5``::

       L = mean(max(0, th+ - D(q))) + mean(max(0, th- + D(q-)))

At test time the patch anomaly score is ``s = -D(G(f))`` (higher = more anomalous); the anomaly map
is the upsampled, smoothed score map (see ``adlib.metrics``) and the image score its maximum.

Adapted-MoE (Lei, Chen et al., 2024) uses one SimpleNet per subclass as its experts (its eq. 3 says
"the loss of expert same as (Liu et al. 2023)"), so this module is shared by both notebooks.

Defaults are those of the SimpleNet release (``run.sh`` and ``simplenet.py`` of DonaldRR/SimpleNet):
noise std 0.015, one-layer adaptor with Xavier-normal init, 2-layer discriminator with 1024 hidden
units, margin 0.5, adaptor AdamW lr 1e-4, discriminator Adam lr 2e-4 with weight decay 1e-5 and a
cosine schedule down to 0.4 x lr. Adapted-MoE quotes "learning rate from 0.0001 to 0.0002" and
160 epochs (SimpleNet's 40 meta-epochs x 4 discriminator epochs), batch size 8.

Differences from the release, on purpose:
- features arrive pre-computed as ``[N, C, h, w]``; the backbone, the 3x3 patch aggregation and the
  channel projection are not part of this module;
- training is counted in **optimizer steps** of a fixed number of patches (``patches_per_step``),
  drawn without replacement from *all* training patches (a new shuffle whenever they run out);
  the release counts epochs of ``batch_size`` whole images. Counting steps makes the amount of
  training independent of the data set's size and resolution: a CPU run of the ``ci`` profile gets
  the same ~200 updates on a 160-image set as on a 48-image one (see ``adlib.config.Profile``);
- the discriminator's cosine schedule runs per step (release: per epoch) down to 0.4 x lr;
- biases are initialised to zero (the release keeps PyTorch's default uniform init for biases), so
  that initialisation is fully driven by our seed.

**Noise scale.** ``sigma = 0.015`` is an absolute number, so its effect depends on the scale of the
features it is added to. The release's WideResNet features (and unit-norm features, Adapted-MoE's
Norm) are small, ours (EfficientNet-Lite0, stage 2+3, 3x3 averaged) have a mean patch norm near 48
and a per-channel std near 3: there ``N(0, 0.015^2)`` changes a feature by 0.02 % of its norm and the
discriminator has nothing to learn. ``noise_scale="patch_norm"`` multiplies ``noise_std`` by the mean
L2 norm of the *training* patches (measured inside :func:`fit`, training data only), which
is what the same sigma means on unit-norm features; the default ``"absolute"`` is the paper's setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn.losses import truncated_l1_loss
from ..training import Optim, Schedule, Training, holdout_split, train
from .base import TrainBudget, flatten_patches

FeatureTransform = Callable[[Tensor], Tensor]


@dataclass
class SimpleNetConfig:
    """SimpleNet hyper-parameters; defaults are SimpleNet's published ones (see module docstring)."""

    noise_std: float = 0.015  # sigma of the Gaussian anomalous-feature generator
    noise_scale: str = "absolute"  # "absolute": sigma = noise_std; "patch_norm": x mean training patch norm
    hidden: int = 1024  # discriminator hidden width ("dsc_hidden")
    leaky_slope: float = 0.2  # LeakyReLU negative slope in the discriminator
    margin: float = 0.5  # th+ = th- of the truncated l1 loss ("dsc_margin")
    lr_adaptor: float = 1e-4  # AdamW on the adaptor (release: lr * 0.1 with lr = 1e-3)
    lr_discriminator: float = 2e-4  # Adam on the discriminator ("dsc_lr")
    weight_decay_discriminator: float = 1e-5
    cosine_min_factor: float = 0.4  # discriminator lr decays (cosine, per step) to 0.4 x lr
    score_chunk: int = 65536  # patches per forward pass when scoring (memory bound only)


class Discriminator(nn.Module):
    """``D``: Linear(C, hidden) + BatchNorm1d + LeakyReLU + Linear(hidden, 1, bias=False)."""

    def __init__(self, in_ch: int, hidden: int = 1024, leaky_slope: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_ch, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(leaky_slope),
        )
        self.tail = nn.Linear(hidden, 1, bias=False)

    def forward(self, q: Tensor) -> Tensor:
        return self.tail(self.body(q)).squeeze(-1)  # [P, C] -> [P]


class SimpleNet(nn.Module):
    """Feature adaptor + discriminator; ``features_transform`` is applied to ``[N, C, h, w]`` first.

    ``features_transform`` is the hook through which Adapted-MoE feeds L2-normalised ("Norm")
    features to an expert; it must map ``[N, C, h, w]`` to ``[N, C, h, w]``. Use an ``nn.Module``
    (e.g. ``adlib.methods.adapted_moe.L2Normalize``) if the model is to be saved with ``torch.save``.
    """

    def __init__(
        self,
        in_ch: int,
        cfg: SimpleNetConfig | None = None,
        features_transform: FeatureTransform | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or SimpleNetConfig()
        self.in_ch = in_ch
        self.adaptor = nn.Linear(in_ch, in_ch)  # G: one Linear C -> C ("pre_proj 1")
        self.discriminator = Discriminator(in_ch, self.cfg.hidden, self.cfg.leaky_slope)
        self.features_transform = features_transform

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Xavier-normal weights (as the release), zero biases, drawn from ``generator``."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                m.reset_parameters()

    def transform(self, feats: Tensor) -> Tensor:
        """Apply the optional feature hook: ``[N, C, h, w] -> [N, C, h, w]``."""
        return feats if self.features_transform is None else self.features_transform(feats)

    def forward(self, patches: Tensor) -> Tensor:
        """Discriminator logit of adapted patches: ``[P, C] -> [P]`` (no hook applied here)."""
        return self.discriminator(self.adaptor(patches))  # [P]

    @torch.no_grad()
    def score(self, feats: Tensor, transform: bool = True) -> Tensor:
        """Patch anomaly scores ``-D(G(f))``: ``[N, C, h, w] -> [N, h, w]`` (on CPU).

        ``transform=False`` skips ``features_transform`` (for callers that already transformed
        the features, e.g. test-time adaptation in ``adlib.methods.adapted_moe``).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        n, c, h, w = feats.shape
        out = torch.empty(n * h * w, dtype=torch.float32)  # [N*h*w]
        img_chunk = max(1, self.cfg.score_chunk // (h * w))
        for i in range(0, n, img_chunk):
            x = feats[i : i + img_chunk].to(device=device, dtype=torch.float32)  # [B, C, h, w]
            if transform:
                x = self.transform(x)  # [B, C, h, w]
            p = flatten_patches(x)  # [B*h*w, C]
            out[i * h * w : i * h * w + len(p)] = -self(p).float().cpu()  # [B*h*w]
        self.train(was_training)
        return out.reshape(n, h, w)  # [N, h, w]


NOISE_SCALES = ("absolute", "patch_norm")


def noise_sigma(patches: Tensor, cfg: SimpleNetConfig) -> float:
    """The std of the generator's noise for training patches ``[P, C]`` (see "Noise scale" above)."""
    if cfg.noise_scale == "absolute":
        return cfg.noise_std
    if cfg.noise_scale == "patch_norm":
        return cfg.noise_std * float(patches.norm(dim=1).mean())
    raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {cfg.noise_scale!r}")


def fit(
    feats: Tensor,
    cfg: SimpleNetConfig | None = None,
    budget: TrainBudget = TrainBudget(),
    features_transform: FeatureTransform | None = None,
    part: str = "model",
) -> SimpleNet:
    """Train one SimpleNet on normal patch features ``feats: [N, C, h, w]`` for ``budget.steps`` steps.

    Each step takes the next ``budget.patches_per_step`` patches of a shuffled list of all ``N*h*w``
    training patches (reshuffled when used up): ``q = G(f)``, ``q- = q + N(0, sigma^2)``, loss
    ``truncated_l1_loss(D(q), D(q-))``, one AdamW step on G and one Adam step on D, the latter with
    a per-step cosine schedule. ``sigma`` is :func:`noise_sigma` of the (transformed) training
    patches. Deterministic given ``budget.seed`` (parameters, patch order and noise come from our
    generators). Returns the model on ``budget.device`` in eval mode, with ``loss_history: [steps]``
    (the training loss of every step, on CPU), ``heldout_history`` (``(step, loss)`` on the images that
    ``budget.holdout`` keeps out of training, every ``budget.eval_every`` steps; empty by default) and
    ``noise_sigma`` (the sigma used) attached. Trained by the one loop (``adlib.training``: checkpoints in
    ``budget.checkpoint/<part>.pt``, the NaN stop, resume).
    """
    cfg = cfg or SimpleNetConfig()
    device = torch.device(budget.device)
    steps, seed = budget.steps, budget.seed
    if feats.ndim != 4:
        raise ValueError(f"feats must be [N, C, h, w], got {tuple(feats.shape)}")
    if steps < 1 or budget.patches_per_step < 2:
        raise ValueError(
            f"need steps >= 1 and patches_per_step >= 2 (BatchNorm), got {steps}, {budget.patches_per_step}"
        )
    n, c, h, w = feats.shape
    g_cpu = torch.Generator().manual_seed(seed)  # parameters and patch order
    g_dev = torch.Generator(device=device).manual_seed(seed + 1)  # noise, drawn on `device`

    model = SimpleNet(c, cfg, features_transform)
    model.reset_parameters(g_cpu)  # on the CPU, then moved: the same initial weights on any device
    model.to(device)

    train_idx, held_idx = holdout_split(n, budget.holdout, seed)  # whole images held out (none by default)
    x = feats.to(device=device, dtype=torch.float32)  # [N, C, h, w]
    with torch.no_grad():
        x = model.transform(x)  # [N, C, h, w]
    patches = flatten_patches(x[train_idx.to(device)] if len(held_idx) else x)  # [P, C], P = N*h*w
    n_patches = len(patches)
    if n_patches < 2:
        raise ValueError("SimpleNet needs at least 2 training patches")
    batch = min(n_patches, budget.patches_per_step)  # patches per step
    sigma = noise_sigma(patches, cfg)

    def loss(q: Tensor, noise: Tensor) -> Tensor:
        """Truncated l1 of ``D`` on adapted normal patches ``q: [B, C]`` and their noisy copies."""
        d = model.discriminator(torch.cat([q, q + noise]))  # [2B]  normal, then synthetic anomalous
        return truncated_l1_loss(d[: len(q)], d[len(q) :], cfg.margin)

    def batch_loss(idx: Tensor, step: int) -> dict[str, Tensor]:
        q = model.adaptor(patches[idx.to(device)])  # [B, C]  adapted normal features
        return {"total": loss(q, torch.randn(q.shape, generator=g_dev, device=device) * sigma)}  # noise [B, C]

    def heldout() -> float:  # the same noise at every evaluation: a smooth curve
        q = model.adaptor(flatten_patches(x[held_idx.to(device)]))  # [P_held, C]
        g = torch.Generator(device=device).manual_seed(seed + 2)
        return float(loss(q, torch.randn(q.shape, generator=g, device=device) * sigma))

    hint = (
        f"lower the learning rates (lr_adaptor={cfg.lr_adaptor}, lr_discriminator={cfg.lr_discriminator}) "
        "or check the training features for NaN/inf"
    )
    cosine = Schedule("cosine", min_factor=cfg.cosine_min_factor)  # per step, down to 0.4 x lr
    result = train(
        Training(
            "SimpleNet",
            {"model": model},
            [
                Optim(model.adaptor.parameters(), "adamw", cfg.lr_adaptor),
                Optim(
                    model.discriminator.parameters(),
                    "adam",
                    cfg.lr_discriminator,
                    cfg.weight_decay_discriminator,
                    cosine,
                ),
            ],
            n_patches,
            batch,
            batch_loss,
            g_cpu,
            hint,
            generators={"noise": g_dev},
            heldout=heldout if len(held_idx) else None,
        ),
        budget,
        part,
    )
    model.loss_history = result.history["total"]  # type: ignore[assignment]
    model.heldout_history = result.heldout  # type: ignore[assignment]
    model.noise_sigma = sigma  # type: ignore[assignment]
    return model
