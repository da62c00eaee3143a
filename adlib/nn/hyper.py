"""The Hyper AD Plug-in: an adapter whose weights a hypernetwork makes from each image (DVAD section 3.3).

DVAD, section 3.3 and Algorithm 1, on the fused feature map ``F: [B, C, H, W]``:

1. **Class information.** The class embedding ``E`` from the encoder is expanded to ``F``'s shape and
   added: ``F <- F + E`` (we project ``E`` to C channels with a linear map when its size differs, and
   broadcast it over the positions).
2. **Tokens.** ``F`` is read as ``H*W`` tokens of C channels per image.
3. **Adapter with residual** (Houlsby et al.): ``F_dyn = F + g * up(SwiGLU(down(F)))``, a bottleneck
   ``C -> d -> C`` (DVAD's code: ``d = 64``, SwiGLU halves it to 32), scaled by a learned gate ``g``
   that starts at 0, so the plug-in starts as the identity (plus ``E``).
4. **Hypernetwork.** The down and up weights and biases are not parameters: for each layer a
   hypernetwork maps the layer's input tokens to a latent ``z`` of size 16 (norm, linear, ReLU, mean
   over the image's tokens) and ``z`` to a weight matrix and a bias (two linear maps). The up layer's
   hypernetwork reads the bottleneck tokens. Each image gets its own adapter; the per-image weights
   are applied with batched matrix products (``torch.baddbmm``).

**The released code differs** (``bebop96/DVAD``, ``Adapter``/``Embedding``/``HyperNetwork``); we implement
the paper and keep two of the release's behaviours behind flags to show their effect:

- ``latent_pool="batch"``: the release averages the latent over all tokens *of the whole batch*, so the
  adapter, and one image's output, change with the other images of the test batch;
- ``tokens="reshape"``: the release turns ``[B, C, H, W]`` into tokens by ``reshape(B, H*W, C)`` without
  a permute, so a "token" mixes channels of several positions;
- its token norm is ``BatchNorm1d`` (batch statistics in training; ``token_norm="batch"``), ours a
  LayerNorm per token, which keeps images independent in training too;
- its gate multiplies the residual as well (``g * (x + adapter(x))``: the plug-in outputs 0 at init);
- its class embedding is commented out (``E`` is never added).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class HyperConfig:
    hidden: int = 64  # DVAD code Adapter(latent_dim=64): C -> 64, SwiGLU -> 32 -> C
    z_dim: int = 16  # DVAD paper "predefined latent space ... (default 16)"; code Embedding(z_dim=16)
    embed_dim: int | None = None  # size of the class embedding E (None: E has C channels, or none is given)
    token_norm: str = "layer"  # "batch": the release's BatchNorm1d over tokens
    latent_pool: str = "image"  # "batch": the release's mean over every token of the batch
    tokens: str = "permute"  # "reshape": the release's reshape without permute
    gate_init: float = 0.0  # DVAD code: the gate starts at 0 (the plug-in starts as the identity plus E)


class HyperNetwork(nn.Module):
    """Tokens ``[B, L, c_in]`` -> a linear layer per image: ``W: [B, c_in, c_out]``, ``b: [B, c_out]``."""

    def __init__(self, c_in: int, c_out: int, cfg: HyperConfig) -> None:
        super().__init__()
        self.c_in, self.c_out, self.pool = c_in, c_out, cfg.latent_pool
        self.norm = nn.LayerNorm(c_in) if cfg.token_norm == "layer" else nn.BatchNorm1d(c_in)
        self.embed = nn.Linear(c_in, cfg.z_dim)  # tokens to the latent space Z
        self.w1 = nn.Parameter(torch.empty(cfg.z_dim, c_in * c_out))  # z -> weight matrix
        self.b1 = nn.Parameter(torch.zeros(c_in * c_out))
        self.w2 = nn.Parameter(torch.empty(cfg.z_dim, c_out))  # z -> bias
        self.b2 = nn.Parameter(torch.zeros(c_out))
        nn.init.xavier_uniform_(self.w1)  # DVAD code HyperNetwork init
        nn.init.xavier_uniform_(self.w2)

    def latent(self, tokens: Tensor) -> Tensor:
        """``[B, L, c_in] -> [B, z]``: norm, linear, ReLU, mean over the image's (or batch's) tokens."""
        B, L, c = tokens.shape
        t = self.norm(tokens) if isinstance(self.norm, nn.LayerNorm) else self.norm(tokens.reshape(B * L, c))
        z = F.relu(self.embed(t.reshape(B, L, c)))  # [B, L, z]
        if self.pool == "batch":  # the release: one latent for the whole batch
            return z.mean(dim=(0, 1)).expand(B, -1)  # [B, z]
        return z.mean(dim=1)  # [B, z]

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        z = self.latent(tokens)  # [B, z]
        W = (z @ self.w1 + self.b1).view(-1, self.c_in, self.c_out)  # [B, c_in, c_out]
        b = z @ self.w2 + self.b2  # [B, c_out]
        return W, b


class HyperPlugin(nn.Module):
    """The Hyper AD Plug-in: ``[B, C, H, W]`` (+ class embedding ``[B, E]``) -> ``[B, C, H, W]``."""

    def __init__(self, dim: int, cfg: HyperConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or HyperConfig()
        if cfg.latent_pool not in ("image", "batch") or cfg.tokens not in ("permute", "reshape"):
            raise ValueError(f"bad HyperConfig: {cfg}")
        self.embed = nn.Linear(cfg.embed_dim, dim) if cfg.embed_dim else None  # E -> C channels
        self.down = HyperNetwork(dim, cfg.hidden, cfg)  # makes W_down: [C, d], b_down: [d]
        self.up = HyperNetwork(cfg.hidden // 2, dim, cfg)  # makes W_up: [d/2, C], b_up: [C]
        self.gate = nn.Parameter(torch.full((1,), float(cfg.gate_init)))  # DVAD code: the gate starts at 0

    def to_tokens(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, H*W, C]`` (``tokens="reshape"``: the release's channel-mixing reshape)."""
        B, C, H, W = x.shape
        if self.cfg.tokens == "reshape":
            return x.reshape(B, H * W, C)
        return x.permute(0, 2, 3, 1).reshape(B, H * W, C)

    def from_tokens(self, t: Tensor, shape: torch.Size) -> Tensor:
        B, C, H, W = shape
        if self.cfg.tokens == "reshape":
            return t.reshape(shape)
        return t.view(B, H, W, C).permute(0, 3, 1, 2)

    def adapter(self, tokens: Tensor) -> Tensor:
        """The bottleneck with per-image generated weights: ``[B, L, C] -> [B, L, C]`` (before the gate)."""
        W_down, b_down = self.down(tokens)  # [B, C, d], [B, d]
        h = torch.baddbmm(b_down[:, None, :], tokens, W_down)  # down: [B, L, d]
        h = F.silu(h[..., : h.shape[-1] // 2]) * h[..., h.shape[-1] // 2 :]  # SwiGLU: [B, L, d/2]
        W_up, b_up = self.up(h)  # [B, d/2, C], [B, C]
        return torch.baddbmm(b_up[:, None, :], h, W_up)  # up: [B, L, C]

    def forward(self, x: Tensor, class_embed: Tensor | None = None) -> Tensor:
        if class_embed is not None:
            e = self.embed(class_embed) if self.embed is not None else class_embed  # [B, C]
            x = x + e[:, :, None, None]  # F <- F + E, expanded over the positions
        tokens = self.to_tokens(x)  # [B, L, C]
        out = tokens + self.gate * self.adapter(tokens)  # residual + gated adapter: [B, L, C]
        return self.from_tokens(out, x.shape)  # [B, C, H, W]
