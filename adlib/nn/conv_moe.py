"""DVAD's MoE module: M 1x1-conv experts mixed at every position by a softmax gate (DVAD section 3.4).

The GLD module concatenates its global, local and dynamic features into ``F_mix`` and mixes experts::

    G = softmax_m(gate(F_mix))                       gating network: a 1x1 conv, [B, M, H, W]
    F_out = sum_m G_m (.) expert_m(F_mix) + F        experts: 1x1 convs with their own parameters

(``(.)``: the Hadamard product, ``G_m`` broadcast over channels; ``F``: the GLD block's input). The
gate is dense: every expert contributes at every position, there is no top-k. With ``M = 1`` the
softmax is 1 and the module is one 1x1 conv plus the residual (DVAD Table 5's "M = 1"). DVAD uses
``M = 5`` and reports ``M`` in {1, 2, 4, 5, 8}.

In the release the gate and experts are declared for 2C input channels but fed the 4C-channel
concatenation [Mamba, 5x5, 7x7, Hyper] (so it cannot run as published); here the input width is an
argument. ``gate_init`` picks the gate's initial weights (``GATE_INITS``). The last gate map is kept,
detached, in ``last_gates`` for plots of which expert each position uses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# "release": the gate conv drawn like the experts (DVAD's _init_weights: normal, sd sqrt(2 / M)); its logits then have
# an sd of about 0.6 x the input's norm, so the softmax starts near one-hot (one expert takes each position) and its
# gradient is small. "zero": a zero gate weight, the gate starts uniform (1/M) and learns from there.
GATE_INITS = ("release", "zero")


class ConvMoE(nn.Module):
    """``M`` experts ``in_dim -> out_dim`` mixed by a per-position softmax gate, plus a residual."""

    def __init__(self, in_dim: int, out_dim: int | None = None, experts: int = 5, gate_init: str = "release") -> None:
        super().__init__()  # DVAD: M = 5
        if gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, got {gate_init!r}")
        out_dim = out_dim or in_dim
        self.experts = nn.ModuleList(nn.Conv2d(in_dim, out_dim, 1) for _ in range(experts))
        self.gate = nn.Conv2d(in_dim, experts, 1)  # the gating network
        self.last_gates: Tensor | None = None  # [B, M, H, W], detached
        for m in self.modules():  # DVAD ConvBNSSMBlock._init_weights
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / m.out_channels))  # fan_out of a 1x1 conv
                nn.init.zeros_(m.bias)
        if gate_init == "zero":  # every expert weighs 1/M everywhere at the start
            nn.init.zeros_(self.gate.weight)

    def gates(self, x: Tensor) -> Tensor:
        """The expert weights at every position: ``[B, in, H, W] -> [B, M, H, W]``, summing to 1 over M."""
        return torch.softmax(self.gate(x), dim=1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``[B, in, H, W]`` -> ``[B, out, H, W]``; the residual defaults to ``x`` (needs ``in == out``)."""
        G = self.gates(x)  # [B, M, H, W]
        self.last_gates = G.detach()
        outs = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, M, out, H, W]
        mixed = (G[:, :, None] * outs).sum(dim=1)  # sum_m G_m * expert_m(x): [B, out, H, W]
        return mixed + (x if residual is None else residual)
