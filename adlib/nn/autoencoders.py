"""AnomalyMoE's experts (Gu et al., 2025): three kinds of feature reconstructors, one per semantic level.

Each expert reconstructs frozen backbone features at its level; its reconstruction error is the
anomaly score at that level (``adlib.methods.anomaly_moe`` trains and mixes them).

* :class:`PatchExpert` (local structure): every position's feature through a noisy MLP bottleneck
  (Dinomaly's ``bMlp``: Linear-GELU-Dropout-Linear-Dropout, dropout 0.2, as the authors' patch
  experts), then a residual depthwise 3x3 conv mixing neighbouring positions. The authors follow the
  bottleneck with 8 ViT blocks with linear attention on DINOv2 tokens; the 3x3 mixing is our cheap
  stand-in (CPU budget), so a patch expert sees a 3x3 neighbourhood of (already 3x3-aggregated) features.
* :class:`ComponentAutoencoder` (component semantics): an MLP autoencoder on one component's pooled
  feature ``[M, C]``, dropout 0.1 in the decoder (the authors' ``ComponentAutoencoder``, 768-256-64-64
  -64-256-768 on DINOv2; the widths are arguments).
* :class:`GlobalAutoencoder` + :class:`Student` (global logic, EfficientAD-style): the autoencoder
  squeezes the whole feature map through a 1x1 spatial bottleneck (a ``latent``-vector per image) and
  decodes it back to ``[C, h, w]``; the student, a small fully convolutional net with a 5x5 receptive
  field on the features, learns to imitate the autoencoder. Where the image's global layout is normal
  the two agree; where it is not, the autoencoder (which only knows normal layouts) and the local
  student disagree. The authors run both on the image (EfficientAD's pixel-level nets); here both run
  on the backbone features, so any ``h, w`` works.

``patch_expert_outputs``, ``global_expert_outputs`` and ``component_expert_scores`` give each kind's
training loss, anomaly map and pooled output (the latter for AnomalyMoE's EIR).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .losses import hard_mined_cosine_loss


class PatchExpert(nn.Module):
    """Noisy per-position MLP bottleneck ``C -> hidden -> C`` plus an optional residual depthwise 3x3 mix.

    ``dropout_input=False``: dropout after each layer, so the output that enters the loss is dropped out too;
    ``True`` (the authors' bottleneck MLP): dropout on the input only, the reconstruction itself is whole.
    """

    def __init__(
        self, channels: int, hidden: int = 128, dropout: float = 0.2, mix: bool = True, dropout_input: bool = False
    ) -> None:
        super().__init__()
        self.dropout_input = dropout_input
        self.fc1 = nn.Conv2d(channels, hidden, 1)  # a Linear per position
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.drop = nn.Dropout(dropout)
        self.mix = nn.Conv2d(channels, channels, 3, padding=1, groups=channels) if mix else None

    def forward(self, x: Tensor) -> Tensor:
        if self.dropout_input:
            y = self.fc2(F.gelu(self.fc1(self.drop(x))))  # [B, C, h, w]  a noisy input, a whole output
        else:
            y = self.drop(F.gelu(self.fc1(x)))  # [B, hidden, h, w]
            y = self.drop(self.fc2(y))  # [B, C, h, w]  the bottleneck's output
        if self.mix is not None:
            y = y + self.mix(y)  # [B, C, h, w]  neighbouring positions
        return y  # [B, C, h, w]


class ComponentAutoencoder(nn.Module):
    """MLP autoencoder ``C -> hidden... -> bottleneck -> ...hidden -> C`` with dropout before each decoder layer."""

    def __init__(
        self, channels: int, hidden: tuple[int, ...] = (256, 64), bottleneck: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        widths = (channels, *hidden, bottleneck)
        enc: list[nn.Module] = []
        for i in range(len(widths) - 1):
            enc += [nn.Linear(widths[i], widths[i + 1]), nn.ReLU()]
        self.encoder = nn.Sequential(*enc[:-1])  # no activation on the code
        dec: list[nn.Module] = []
        back = widths[::-1]
        for i in range(len(back) - 1):
            dec += [nn.Dropout(dropout), nn.Linear(back[i], back[i + 1]), nn.ReLU()]
        self.decoder = nn.Sequential(*dec[:-1])  # linear output

    def forward(self, f: Tensor) -> Tensor:
        return self.decoder(self.encoder(f))  # [M, C] -> [M, C]


SEED_GRID = 4  # the decoder starts from a 4x4 map (EfficientAD: 3x3), so that positions differ


class GlobalAutoencoder(nn.Module):
    """Features ``[B, C, h, w]`` -> a ``latent`` vector per image (1x1) -> features ``[B, C, h, w]``.

    Encoder: 1x1 conv to ``hidden``, two stride-2 3x3 convs, an average pool to 4x4 and a linear map of
    the whole 4x4 grid to ``latent`` (EfficientAD's last encoder conv also covers the whole map, so the
    code keeps where things are). Decoder: a linear map back to a 4x4 grid, bilinear upsampling to
    ``h/2`` and ``h`` with a 3x3 conv (and dropout, as EfficientAD's decoder) after each, a 1x1 conv to ``C``.
    """

    def __init__(self, channels: int, hidden: int = 64, latent: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(SEED_GRID),
            nn.Flatten(),
            nn.Linear(hidden * SEED_GRID * SEED_GRID, latent),
        )
        self.expand = nn.Linear(latent, hidden * SEED_GRID * SEED_GRID)
        self.up1 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.up2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        z = self.encoder(x)  # [B, latent]  the 1x1 bottleneck
        y = F.relu(self.expand(z)).view(b, self.hidden, SEED_GRID, SEED_GRID)  # [B, hidden, 4, 4]
        y = F.interpolate(y, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=False)
        y = self.drop(F.relu(self.up1(y)))  # [B, hidden, h/2, w/2]
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)  # [B, hidden, h, w]
        y = self.drop(F.relu(self.up2(y)))  # [B, hidden, h, w]
        return self.out(y)  # [B, C, h, w]


class Student(nn.Module):
    """A small local net ``[B, C, h, w] -> [B, C, h, w]``: 1x1, 3x3, 3x3, 1x1 convs (receptive field 5x5)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # [B, C, h, w]


# ----------------------------------------------------------------------------- losses and maps of the experts


def patch_expert_outputs(
    expert: PatchExpert, x: Tensor, p: float = 0.9, factor: float = 0.1
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss ``[n]`` (hard-mined cosine), map ``1 - cos(x, x_hat)`` ``[n, h, w]`` and pooled output ``[n, C]``."""
    recon = expert(x)  # [n, C, h, w]
    loss = hard_mined_cosine_loss(x, recon, p, factor)  # [n]
    return loss, 1 - F.cosine_similarity(x, recon, dim=1), recon.mean(dim=(2, 3))  # [n], [n, h, w], [n, C]


GLOBAL_MAPS = ("mse", "cosine", "cosine+ae")


def global_expert_outputs(
    ae: GlobalAutoencoder, student: Student, x: Tensor, kind: str = "mse"
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss ``mse(AE, x) + mse(student, AE)`` ``[n]``, map ``[n, h, w]`` and the student's pooled output ``[n, C]``.

    The student imitates the autoencoder without a detach (both learn from that term, as in EfficientAD).
    Maps (``kind``): ``"mse"`` = ``mean_c (AE - student)^2`` (EfficientAD, the AnomalyMoE authors);
    ``"cosine"`` = ``1 - cos(AE, student)``; ``"cosine+ae"`` adds the autoencoder's ``1 - cos(AE, x)``.
    """
    out, st = ae(x), student(x)  # [n, C, h, w], [n, C, h, w]
    ae_err = ((out - x) ** 2).mean(dim=1)  # [n, h, w]
    st_err = ((st - out) ** 2).mean(dim=1)  # [n, h, w]
    if kind not in GLOBAL_MAPS:
        raise ValueError(f"global_map must be one of {GLOBAL_MAPS}, got {kind!r}")
    amap = st_err if kind == "mse" else 1 - F.cosine_similarity(out, st, dim=1)  # [n, h, w]
    if kind == "cosine+ae":
        amap = amap + 1 - F.cosine_similarity(out, x, dim=1)  # [n, h, w]
    return (ae_err + st_err).mean(dim=(1, 2)), amap, st.mean(dim=(2, 3))  # [n], [n, h, w], [n, C]


def component_expert_scores(ae: ComponentAutoencoder, f: Tensor) -> Tensor:
    """``1 - cos(AE(f), f)`` of pooled component features ``f: [m, C]`` -> ``[m]`` (loss and score)."""
    return 1 - F.cosine_similarity(ae(f), f, dim=1)  # [m]
