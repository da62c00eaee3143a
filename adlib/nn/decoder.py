"""DVAD's decoder: multi-scale fusion, patch expanding and the GLD module (DVAD sections 3.1-3.4; MambaAD).

DVAD (section 3.1) reads an image with a frozen encoder (ResNet-34 layers 1-3 in the paper), fuses the three
maps into one ``F: [B, C, H, W]`` ("several convolutional layers ... adjusting the sizes to match"), and a
decoder of **GLD** stages predicts the encoder maps back at the three scales; the anomaly map compares them.
The authors build this on MambaAD's code, whose shapes we follow:

* :class:`MultiScaleFusion` (RD4AD's one-class bottleneck, as MambaAD uses it): every encoder map is brought
  to the size of the deepest one by stride-2 3x3 convolutions (conv + BN + ReLU), the maps are concatenated,
  merged by a 1x1 conv, and a stride-2 residual block halves the size once more. At 256 px with strides
  4/8/16 this is the 8x8 bottleneck of MambaAD (512 channels there, ``dim`` here).
* :class:`PatchExpand` (Swin-Unet / MambaAD): a linear map to ``4 * out`` channels, rearranged into a 2x2
  block per position, LayerNorm. With ``out = dim / 2`` it is MambaAD's ``PatchExpand2D``; our channel
  order inside the 2x2 block is ``pixel_shuffle``'s, a fixed permutation of the (learned) linear's rows.
* :class:`GLDBlock` (section 3.4): global ``F_g`` = VSS (Mamba) blocks, local ``F_l`` = the CNN block,
  dynamic ``F_d`` = the Hyper AD Plug-in on ``F + E``; ``F_mix = concat(F_g, F_l, F_d)``, then the MoE:
  ``F_out = sum_m G_m (.) expert_m(F_mix) + F``. Any subset of the three branches can be switched off
  (DVAD Table 4); the MoE's input width follows.
* :class:`GLDDecoder`: stages of GLD blocks at growing resolution, a :class:`PatchExpand` between stages
  (MambaAD: dims 512, 256, 128, 64, depths 3, 4, 6, 3 after the bottleneck); it returns every stage's
  output, coarsest first.

The class embedding ``E`` (section 3.3) is passed to every GLD block; the block's plug-in projects it to the
block's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlib.nn.conv_moe import ConvMoE
from adlib.nn.hyper import HyperConfig, HyperPlugin
from adlib.nn.mamba import CNNBlock, MambaConfig, VSSBlock


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """``kernel x kernel`` conv (no bias) + BatchNorm + ReLU, as RD4AD's bottleneck layers."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualDown(nn.Module):
    """A ResNet basic block with stride 2: ``[B, c_in, H, W] -> [B, c_out, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride=2)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.skip(x))  # [B, c_out, H/2, W/2]


class Residual(nn.Module):
    """A ResNet basic block at stride 1: ``relu(conv-bn-relu-conv-bn(x) + x)``, ``[B, C, H, W]`` in and out."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c, c)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + x)


class MultiScaleFusion(nn.Module):
    """Encoder maps (finest first, each half the size of the one before) -> one map ``[B, dim, H_L/2, W_L/2]``.

    Each map is brought to the deepest map's size and width by stride-2 conv-bn-relu layers; ``mode="concat"``
    puts them side by side and a 1x1 conv-bn-relu makes ``dim`` channels of the ``L * C_L``; ``"sum"`` adds them
    (MambaAD's MFF_OCE) before the 1x1. Then ``blocks`` residual blocks, the first with stride 2 (MambaAD: 3).
    """

    def __init__(self, in_channels: Sequence[int], dim: int, mode: str = "concat", blocks: int = 1) -> None:
        super().__init__()
        if len(in_channels) < 1:
            raise ValueError("in_channels: MultiScaleFusion needs at least one encoder map")
        deep = in_channels[-1]
        L = len(in_channels)
        self.down = nn.ModuleList(  # map i: L - 1 - i stride-2 convs to the deepest map's size and width
            nn.Sequential(*[conv_bn_relu(c if k == 0 else deep, deep, stride=2) for k in range(L - 1 - i)])
            for i, c in enumerate(in_channels)
        )
        if mode not in ("concat", "sum"):
            raise ValueError(f"mode must be 'concat' or 'sum', got {mode!r}")
        self.mode = mode
        self.merge = conv_bn_relu(L * deep if mode == "concat" else deep, dim, kernel=1)  # -> dim
        down = ResidualDown(dim, dim)  # MambaAD's 8x8 bottleneck at 256 px
        self.bottleneck = down if blocks == 1 else nn.Sequential(down, *[Residual(dim) for _ in range(blocks - 1)])

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        size = maps[-1].shape[-2:]
        same = [down(m) for down, m in zip(self.down, maps, strict=True)]  # each [B, C_L, H_L, W_L]
        same = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in same]
        mixed = torch.cat(same, dim=1) if self.mode == "concat" else torch.stack(same).sum(0)  # [B, L*C_L or C_L, ..]
        return self.bottleneck(self.merge(mixed))  # [B, dim, H_L/2, W_L/2]


class PatchExpand(nn.Module):
    """``[B, dim, H, W] -> [B, out, 2H, 2W]``: linear to ``4 * out``, 2x2 rearrangement, LayerNorm."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(dim, 4 * out, 1, bias=False)  # a linear map per position
        self.norm = nn.LayerNorm(out)

    def forward(self, x: Tensor) -> Tensor:
        y = F.pixel_shuffle(self.expand(x), 2)  # [B, out, 2H, 2W]
        return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over channels


@dataclass
class GLDConfig:
    """One GLD block: which branches, how many experts, and the settings of each branch."""

    use_mamba: bool = True  # DVAD Table 4: all three branches by default
    use_cnn: bool = True
    use_hyper: bool = True
    experts: int = 5  # DVAD section 4.1.4 and its code: M = 5
    mamba_blocks: int = 1  # VSS blocks in the global branch (DVAD code: 2-3; ours: 1, CPU)
    mamba: MambaConfig = field(default_factory=MambaConfig)  # MambaAD's SS2D defaults, DVAD's 8 Hilbert scans
    hyper: HyperConfig = field(default_factory=HyperConfig)  # the paper's plug-in (per image, permuted tokens)
    cnn_kernels: tuple[int, ...] = (5, 7)  # DVAD code: depthwise 5x5 and 7x7 branches
    cnn_norm: str = "instance"  # DVAD code: InstanceNorm
    gate_init: str = "release"  # the MoE gate's initial weights (adlib.nn.conv_moe.GATE_INITS)

    def branches(self) -> list[str]:
        """The names of the active branches, in concatenation order."""
        return [n for n, on in (("mamba", self.use_mamba), ("cnn", self.use_cnn), ("hyper", self.use_hyper)) if on]


class GLDBlock(nn.Module):
    """Global (Mamba) + local (CNN) + dynamic (Hyper) features mixed by the MoE; ``[B, C, H, W]`` in and out."""

    def __init__(self, dim: int, cfg: GLDConfig, embed_dim: int | None = None) -> None:
        super().__init__()
        names = cfg.branches()
        if not names:
            raise ValueError("GLDConfig: at least one of use_mamba, use_cnn, use_hyper must be True")
        if cfg.experts < 1:
            raise ValueError(f"GLDConfig.experts must be >= 1, got {cfg.experts}")
        self.names = names
        self.mamba = (
            nn.Sequential(*[VSSBlock(dim, cfg.mamba) for _ in range(cfg.mamba_blocks)]) if cfg.use_mamba else None
        )
        self.cnn = CNNBlock(dim, cfg.cnn_kernels, cfg.cnn_norm) if cfg.use_cnn else None
        hyper_cfg = HyperConfig(**{**cfg.hyper.__dict__, "embed_dim": embed_dim})
        self.hyper = HyperPlugin(dim, hyper_cfg) if cfg.use_hyper else None
        self.moe = ConvMoE(len(names) * dim, dim, cfg.experts, cfg.gate_init)  # F_mix -> F_out (+ the block input)

    def branch_outputs(self, x: Tensor, class_embed: Tensor | None = None) -> list[Tensor]:
        """``[F_global, F_local, F_dynamic]`` (the active ones), each ``[B, C, H, W]``."""
        out = []
        if self.mamba is not None:
            out.append(self.mamba(x))  # global: [B, C, H, W]
        if self.cnn is not None:
            out.append(self.cnn(x))  # local: [B, C, H, W]
        if self.hyper is not None:
            out.append(self.hyper(x, class_embed))  # dynamic, on F + E: [B, C, H, W]
        return out

    def forward(self, x: Tensor, class_embed: Tensor | None = None) -> Tensor:
        mixed = torch.cat(self.branch_outputs(x, class_embed), dim=1)  # F_mix: [B, n*C, H, W]
        return self.moe(mixed, residual=x)  # sum_m G_m (.) expert_m(F_mix) + F: [B, C, H, W]


class GLDDecoder(nn.Module):
    """Stages of GLD blocks; stage ``i`` runs at width ``dims[i]`` and twice the size of stage ``i - 1``."""

    def __init__(self, dims: Sequence[int], depths: Sequence[int], cfg: GLDConfig, embed_dim: int | None = None):
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims and depths need one entry per stage, got {tuple(dims)} and {tuple(depths)}")
        self.stages = nn.ModuleList(
            nn.ModuleList(GLDBlock(d, cfg, embed_dim) for _ in range(n)) for d, n in zip(dims, depths, strict=True)
        )
        self.expand = nn.ModuleList(PatchExpand(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor, class_embed: Tensor | None = None) -> list[Tensor]:
        """``[B, dims[0], h, w]`` -> every stage's output, coarsest first: ``[B, dims[i], h * 2^i, w * 2^i]``."""
        outs = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.expand[i - 1](x)  # [B, dims[i], 2h, 2w]
            for block in stage:
                x = block(x, class_embed)  # [B, dims[i], h_i, w_i]
            outs.append(x)
        return outs

    def blocks(self) -> list[GLDBlock]:
        """Every GLD block, coarsest stage first."""
        return [b for stage in self.stages for b in stage]


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
