"""Mamba (VSS / SS2D) block and the local CNN block of DVAD's GLD module (DVAD section 3.2; MambaAD).

**SS2D as MambaAD codes it** (and DVAD's release, which reuses it unchanged), on ``x: [B, C, H, W]``::

    x, z = in_proj(x)                     C -> 2 * E, E = expand * C
    x = silu(depthwise_conv3x3(x))        [B, E, H, W]
    for each of K scan orders k:          (adlib.nn.scan2d, Hilbert, K = 8 in DVAD's config)
        dt, B, C = x_proj_k(x_seq)        dt of rank ceil(C / 16), B and C of d_state N = 16
        y_k = selective_scan(x_seq, dt_proj_k(dt), A_k, B, C, D_k, softplus, dt bias)
    y = LayerNorm(sum_k y_k back on the map) * silu(z)
    out = out_proj(y)                     E -> C

and the VSS block is ``x + SS2D(LayerNorm(x))`` (MambaAD's ``VSSBlock``, without its DropPath).
Initialisation as MambaAD: ``A = -[1..N]`` per channel (S4D real, stored as ``A_log``), ``D = 1``,
``softplus(dt bias)`` log-uniform in ``[0.001, 0.1]`` (floored at 1e-4; the bias is the inverse
softplus), dt weights uniform in ``+-rank^-0.5``, linear weights truncated normal (std 0.02, no bias),
depthwise conv weights normal with std ``sqrt(2 / fan_out)`` and zero bias (the LSS block's init).

**What the DVAD text says instead** (``variant="dvad_text"``): "we flatten it, apply a linear layer,
followed by a convolutional layer, and process it with the SwiGLU activation function. The sequence
is then passed through the SSM module ... A bypass with a linear layer and SwiGLU activation is also
applied to the input feature. Finally, the outputs from both branches are concatenated and passed
through a linear layer". So the text has SwiGLU where the code has SiLU, and a bypass branch that is
*concatenated* where the code *multiplies* by ``silu(z)``. The text is silent on scan orders, on how
the directions are merged and on a norm; we keep MambaAD's (the same ``scan_map``, summed, then
LayerNorm). SwiGLU splits its input's channels in two halves: ``silu(a) * b`` (as DVAD's adapter).

**The CNN block** (the local branch, DVAD's ``ConvBNSSMBlock`` beside the Mamba blocks): two branches,
each ``1x1 conv + InstanceNorm + SiLU -> depthwise kxk (k = 5, resp. 7) + IN + SiLU -> 1x1 + IN +
SiLU``. DVAD's code concatenates both branch outputs with the Mamba and Hyper features and lets the
MoE's 1x1 convolutions mix them; our block fuses its two branches itself, by concatenation and a
1x1 conv (2C -> C, as MambaAD's ``finalconv11`` fuses its concatenation), so that it returns the
paper's ``F_local: [B, C, H, W]``; ``branches(x)`` gives the two outputs unfused. Note that
InstanceNorm makes the "local" block not strictly local: each norm uses the statistics of the whole
map, so a far-away change moves every output a little (``norm="batch"`` or ``"none"`` is strictly
local, within the receptive field of radius ``(k - 1) / 2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlib.nn.scan import selective_scan
from adlib.nn.scan2d import flatten_orders, merge_orders, scan_orders


@dataclass
class MambaConfig:
    d_state: int = 16  # MambaAD SS2D(d_state=16)
    expand: int = 2  # MambaAD SS2D(expand=2): E = 2C
    d_conv: int = 3  # MambaAD SS2D(d_conv=3): depthwise 3x3
    directions: int = 8  # DVAD config model_s num_direction=8
    path: str = "hilbert"  # DVAD config model_s scan_type='hilbert'
    dt_min: float = 0.001  # MambaAD SS2D dt_min
    dt_max: float = 0.1  # MambaAD SS2D dt_max
    dt_floor: float = 1e-4  # MambaAD SS2D dt_init_floor
    merge: str = "sum"  # MambaAD: y = sum(ys)
    variant: str = "mambaad"  # "mambaad" (the code) or "dvad_text" (the paper's prose)
    scan_method: str = "auto"  # adlib.nn.scan.selective_scan(method=...)


def swiglu(x: Tensor, dim: int = -1) -> Tensor:
    """SwiGLU without weights: ``silu(a) * b`` for the two halves ``a, b`` of ``x`` along ``dim``."""
    a, b = x.chunk(2, dim=dim)
    return F.silu(a) * b


class SS2D(nn.Module):
    """The 2-D selective scan block; ``[B, C, H, W] -> [B, C, H, W]`` (channels-last inside)."""

    def __init__(self, dim: int, cfg: MambaConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MambaConfig()
        if cfg.variant not in ("mambaad", "dvad_text"):
            raise ValueError(f"variant must be 'mambaad' or 'dvad_text', got {cfg.variant!r}")
        E, K, N = cfg.expand * dim, cfg.directions, cfg.d_state
        self.rank = math.ceil(dim / 16)  # MambaAD dt_rank="auto"
        text = cfg.variant == "dvad_text"
        self.in_proj = nn.Linear(dim, 2 * E, bias=False)  # code: x and z; text: SwiGLU's two halves
        conv_ch = 2 * E if text else E
        self.conv = nn.Conv2d(conv_ch, conv_ch, cfg.d_conv, padding=(cfg.d_conv - 1) // 2, groups=conv_ch)
        self.bypass = nn.Linear(dim, 2 * E, bias=False) if text else None  # text: linear + SwiGLU
        self.x_proj = nn.Parameter(torch.empty(K, self.rank + 2 * N, E))  # per direction: x -> (dt, B, C)
        self.dt_weight = nn.Parameter(torch.empty(K, E, self.rank))  # dt_proj, per direction
        self.dt_bias = nn.Parameter(torch.empty(K, E))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1.0)).repeat(K, E, 1))  # S4D real: [K, E, N]
        self.D = nn.Parameter(torch.ones(K, E))
        self.out_norm = nn.LayerNorm(E)
        self.out_proj = nn.Linear(2 * E if text else E, dim, bias=False)
        self._orders: dict[tuple, Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        for lin in (self.in_proj, self.out_proj, self.bypass):
            if lin is not None:
                nn.init.trunc_normal_(lin.weight, std=0.02)  # MambaUPNet._init_weights
        for w in self.x_proj:  # nn.Linear's default init per direction (MambaAD makes x_proj from Linears)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # uniform in +-1/sqrt(E)
        std = self.rank**-0.5  # dt_init="random", dt_scale=1
        nn.init.uniform_(self.dt_weight, -std, std)
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        dt = torch.exp(torch.rand(self.dt_bias.shape) * (hi - lo) + lo).clamp(min=cfg.dt_floor)  # [K, E]
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus: softplus(bias) = dt
        fan_out = self.conv.kernel_size[0] * self.conv.kernel_size[1]  # depthwise: out / groups = 1
        self.conv.weight.normal_(0, math.sqrt(2.0 / fan_out))  # LSS block's _init_weights
        self.conv.bias.zero_()

    def orders(self, H: int, W: int, device: torch.device) -> Tensor:
        """The K scan orders of an ``H x W`` map, cached: ``[K, H*W]``."""
        key = (H, W, device)
        if key not in self._orders:
            self._orders[key] = scan_orders(H, W, self.cfg.directions, self.cfg.path).to(device)
        return self._orders[key]

    def scan_map(self, x: Tensor) -> Tensor:
        """Selective scans along the K orders, merged back: ``[B, E, H, W] -> [B, E, H, W]``."""
        B, E, H, W = x.shape
        K, N, R, L = self.cfg.directions, self.cfg.d_state, self.rank, H * W
        orders = self.orders(H, W, x.device)  # [K, L]
        xs = flatten_orders(x, orders)  # [B, K, E, L]
        dbc = torch.einsum("bkel,kce->bkcl", xs, self.x_proj)  # [B, K, R + 2N, L]
        dt, Bs, Cs = dbc.split([R, N, N], dim=2)  # [B, K, R, L], [B, K, N, L], [B, K, N, L]
        dt = torch.einsum("bkrl,ker->bkel", dt, self.dt_weight)  # [B, K, E, L]
        y = selective_scan(
            xs.reshape(B, K * E, L),
            dt.reshape(B, K * E, L),
            -torch.exp(self.A_log).view(K * E, N),  # A < 0: [K*E, N]
            Bs.contiguous(),  # one group of E channels per direction
            Cs.contiguous(),
            self.D.view(K * E),
            delta_bias=self.dt_bias.view(K * E),
            delta_softplus=True,
            method=self.cfg.scan_method,
        )  # [B, K*E, L]
        return merge_orders(y.view(B, K, E, L), orders, H, W, reduce=self.cfg.merge)  # [B, E, H, W]

    def forward_last(self, t: Tensor) -> Tensor:
        """Channels last: ``[B, H, W, C] -> [B, H, W, C]``."""
        if self.bypass is None:  # the code
            u, z = self.in_proj(t).chunk(2, dim=-1)  # [B, H, W, E] each
            u = F.silu(self.conv(u.permute(0, 3, 1, 2)))  # [B, E, H, W]
            y = self.out_norm(self.scan_map(u).permute(0, 2, 3, 1))  # [B, H, W, E]
            return self.out_proj(y * F.silu(z))  # gate, project: [B, H, W, C]
        u = swiglu(self.conv(self.in_proj(t).permute(0, 3, 1, 2)), dim=1)  # linear, conv, SwiGLU: [B, E, H, W]
        y = self.out_norm(self.scan_map(u).permute(0, 2, 3, 1))  # SSM: [B, H, W, E]
        side = swiglu(self.bypass(t))  # the bypass: [B, H, W, E]
        return self.out_proj(torch.cat([y, side], dim=-1))  # concatenate, project: [B, H, W, C]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, C, H, W]


class VSSBlock(nn.Module):
    """MambaAD's VSS block without DropPath: ``x + SS2D(LayerNorm(x))``; ``[B, C, H, W]`` in and out."""

    def __init__(self, dim: int, cfg: MambaConfig | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # MambaAD VSSBlock norm_layer eps
        self.ss2d = SS2D(dim, cfg)

    def forward(self, x: Tensor) -> Tensor:
        t = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        return (t + self.ss2d.forward_last(self.norm(t))).permute(0, 3, 1, 2)  # [B, C, H, W]


class CNNBlock(nn.Module):
    """DVAD's local branch: two conv branches (5x5 and 7x7 depthwise), fused by a 1x1 conv."""

    def __init__(self, dim: int, kernels: tuple[int, ...] = (5, 7), norm: str = "instance") -> None:
        super().__init__()
        norms = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d, "none": lambda c: nn.Identity()}
        if norm not in norms:
            raise ValueError(f"norm must be one of {list(norms)}, got {norm!r}")

        def unit(k: int) -> nn.Sequential:  # conv + norm + SiLU; the kxk conv is depthwise, without bias
            conv = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim if k > 1 else 1, bias=k == 1)
            return nn.Sequential(conv, norms[norm](dim), nn.SiLU())

        self.branch = nn.ModuleList(nn.Sequential(unit(1), unit(k), unit(1)) for k in kernels)
        self.fuse = nn.Conv2d(len(kernels) * dim, dim, 1)
        for m in self.modules():  # DVAD / MambaAD ConvBNSSMBlock._init_weights
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def branches(self, x: Tensor) -> list[Tensor]:
        """The branch outputs, unfused: ``[B, C, H, W]`` each."""
        return [b(x) for b in self.branch]

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat(self.branches(x), dim=1))  # [B, 2C, H, W] -> [B, C, H, W]
