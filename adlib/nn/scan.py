"""Selective scan (Mamba's S6 recurrence): a readable sequential reference and a fast chunked scan.

Mamba (Gu & Dao, 2023), section 3 and Algorithm 2, as used by MambaAD's SS2D and DVAD's Mamba block.
With a per-channel state ``h_t[d, n]``, the continuous system ``h' = A h + B u``, ``y = C h + D u`` is
discretised per step with an input-dependent step size ``delta_t[d]``:

    dA_t = exp(delta_t * A)            zero-order hold for A            [d, n]
    dB_t u_t = delta_t * B_t * u_t     Mamba's simplified (Euler) B    [d, n]
    h_t = dA_t * h_{t-1} + dB_t u_t
    y_t = C_t . h_t + D * u_t          (then y * silu(z) when a gate z is given)

Tensor layout is that of ``mamba_ssm``'s ``selective_scan_fn``: ``u, delta, z: [B, D, L]``,
``A: [D, N]``, ``B, C: [B, N, L]`` (shared by all channels) or ``[B, G, N, L]`` (G groups of
``D / G`` channels; SS2D uses one group per scan direction), ``D, delta_bias: [D]``.

**The chunked scan, and why it cannot overflow.** The recurrence is linear in ``h``, so it can be
split: cut a block of the sequence into ``S`` segments of ``T`` steps, run the recurrence inside all
segments at once from a zero state (``T`` steps, each one tensor op over ``S`` segments), then carry
the true state across segments (``S`` small steps) and add its decayed contribution
``P_t * h_start`` to every position, where ``P_t = prod_{r<=t} dA_r = exp(A * cumsum(delta))``
within the segment. Decays are only ever *multiplied*; nothing is divided by a decay, and the only
cumulative sum that is exponentiated is local to a segment and multiplies ``A <= 0``, so every
exponent is ``<= 0``: the result lies in ``[0, 1]``, an underflow to 0 is the exact limit, and no
``exp(-cumsum)`` (which overflows beyond about 88 in float32) is ever formed. So chunk sizes are free
performance knobs, not a correctness constraint, and strong decay (cumulative ``delta*A`` of -900
over L = 1024) is as exact as the sequential loop.

**Why it is fast on a CPU.** The sequential loop issues ~8 tensor ops per time step; for small
problems its cost is the per-op overhead, for large ones ``B*D*N*L`` calls of ``exp``. The chunked
scan (1) runs small states in ``S ~ sqrt(L)`` segments, so ``L = 1024`` takes ~90 ops instead of
~8000; (2) runs large states (``S = 1``) in blocks of 16-64 steps: per block one ``exp2`` over all
decays (``A`` pre-scaled by ``log2 e``: 2.5x faster than ``exp`` here) and one batched read-out
``y_t = C_t . h_t``, per step a single fused ``addcmul``; (3) keeps time outermost (one 2-D
transpose of the ``[B*D, L]`` inputs), so every per-step slice is contiguous; (4) reuses its scratch
buffers between calls (``_scratch``). Gradients come from a hand-written backward: the adjoint
``g_t = C_t gy_t + dA_{t+1} g_{t+1}`` is the same scan run backwards in time, on states recomputed
per block from the saved block-entry states (as the CUDA kernel recomputes them).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOG2E = math.log2(math.e)  # exp(x) = exp2(x * log2(e)); torch's exp2 is ~2.5x faster than exp here
METHODS = ("auto", "sequential", "chunked", "mamba_ssm")


@functools.lru_cache(maxsize=1)
def _mamba_ssm_fn() -> Callable | None:
    """``mamba_ssm``'s CUDA selective scan when it is installed (never required)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or installed without its compiled kernel
        return None
    return selective_scan_fn


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    method: str = "auto",
) -> Tensor:
    """Selective scan with ``mamba_ssm``'s signature; returns ``y: [B, D, L]`` in ``u``'s dtype.

    ``method``: ``"sequential"`` (the readable loop), ``"chunked"`` (fast, any device),
    ``"mamba_ssm"`` (the CUDA kernel), ``"auto"`` (the kernel when importable and ``u`` is on CUDA,
    else ``"chunked"``). The recurrence runs in float32 (float64 if ``u`` is float64).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "mamba_ssm" or (method == "auto" and u.is_cuda and _mamba_ssm_fn() is not None):
        fn = _mamba_ssm_fn()
        if fn is None:
            raise RuntimeError("method='mamba_ssm' needs the mamba_ssm package with its CUDA kernel")
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype_in = u.dtype
    cdt = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]  # [B, D, L]
    if delta_softplus:
        delta = F.softplus(delta)  # [B, D, L], > 0
    if B.dim() == 3:  # shared by all channels: one group
        B, C = B[:, None], C[:, None]  # [B, 1, N, L]
    if u.shape[1] % B.shape[1] or A.shape != (u.shape[1], B.shape[2]):
        raise ValueError(f"shapes do not fit: u {tuple(u.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}")
    if method == "sequential":
        y = scan_sequential(u, delta, A, B, C)  # [B, D, L]
    else:
        y = _ChunkedScan.apply(u, delta, A, B, C)  # [B, D, L]
    if D is not None:
        y = y + u * D.to(cdt)[:, None]  # skip connection D u_t
    if z is not None:
        y = y * F.silu(z.to(cdt))  # gate
    return y.to(dtype_in)


def scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The recurrence written out, one time step per iteration (the reference; autograd for free).

    ``u, delta: [b, D, L]``, ``A: [D, N]``, ``B, C: [b, G, N, L]`` -> ``y: [b, D, L]`` (no D, no z).
    """
    b, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    A = A.reshape(g, d // g, n)  # channels in groups: [G, Dg, N]
    h = u.new_zeros(b, g, d // g, n)  # state [b, G, Dg, N]
    ys = []
    # unbind along time once: per-step slicing of a big tensor would cost a full-size gradient per step
    us, dts = u.reshape(b, g, d // g, L).unbind(-1), delta.reshape(b, g, d // g, L).unbind(-1)
    for u_t, dt_t, B_t, C_t in zip(us, dts, B.unbind(-1), C.unbind(-1), strict=True):  # [b, G, Dg|N]
        dA = torch.exp(dt_t[..., None] * A)  # zero-order hold: [b, G, Dg, N]
        dBu = (dt_t * u_t)[..., None] * B_t[:, :, None, :]  # simplified B: [b, G, Dg, N]
        h = dA * h + dBu  # [b, G, Dg, N]
        ys.append((h * C_t[:, :, None, :]).sum(-1).reshape(b, d))  # y_t = C_t . h_t: [b, D]
    return torch.stack(ys, dim=-1)  # [b, D, L]


# ----------------------------------------------------------------------------------------------
# The chunked scan. Inside, time is the outermost axis: a block of T*S steps lives in buffers
# [T, S, b, G, N, Dg] (T steps of S segments; b sequences, G groups, state N, Dg channels a group).


def _plan(L: int, state: int, device: torch.device) -> tuple[int, int]:
    """(T, S): steps per segment and segments per block. A block of T*S steps is scanned at once.

    Tuned on a 2-core AMD EPYC (AVX-512, 1 MiB L2), float32, one thread. A small state
    (``b*D*N <= 2048`` numbers) is overhead-bound: blocks of up to 2^18 state numbers (the whole
    sequence at (1, 16, 16), L = 1024) cut into ~sqrt steps x segments. A larger state runs one
    segment per block of 16 to 64 steps (about 2^18 state numbers, 1 MiB): there, fewer ops do not pay
    for the two extra passes of the segment correction. Off the CPU one block holds the whole sequence.
    """
    if device.type != "cpu":
        S = max(1, round(math.sqrt(L)))
        return -(-L // S), S
    if state > 2048:
        return min(L, max(16, min(64, (1 << 18) // state))), 1
    Lb = max(1, min(L, (1 << 18) // state))  # steps per block
    S = max(1, round(math.sqrt(Lb)))
    return -(-Lb // S), S


_WORKSPACE = threading.local()  # scratch buffers, per thread, reused between calls


def _scratch(like: Tensor, shape: tuple[int, ...], name: str) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The scratch buffer ``name`` and its per-step views, kept (per thread) between calls.

    Reuse matters on a CPU: glibc gives freed multi-MiB blocks back to the OS, and the page faults of
    touching fresh ones cost more than a small scan itself (2.7 ms instead of 1.0 ms at (1, 16, 16)).
    Nothing in a scratch buffer outlives a call: outputs and saved tensors are fresh.
    """
    bufs = _WORKSPACE.__dict__.setdefault("bufs", {})
    key = (name, like.device, like.dtype)
    if key not in bufs or bufs[key][0].shape != shape:
        buf = like.new_empty(shape)
        bufs[key] = (buf, buf.unbind(0))  # views made once: slicing in the loop costs more
    return bufs[key]


def _time_major(t: Tensor, Lp: int, scratch: str | None = None) -> Tensor:
    """``[b, ..., L] -> [Lp, b, ...]`` contiguous, zero-padded at the end to ``Lp`` steps.

    A 2-D transpose of ``[b*..., L]``, torch's fastest layout change; into the scratch buffer
    ``scratch`` when the result need not outlive the call.
    """
    L = t.shape[-1]
    shape = (Lp, *t.shape[:-1])
    out = _scratch(t, shape, scratch)[0] if scratch else t.new_empty(shape)
    out.view(Lp, -1)[:L].copy_(t.reshape(-1, L).t())  # [L, b*...]
    out[L:].zero_()  # delta = 0 pads: dA = 1, dBu = 0
    return out


def _segments(t: Tensor, T: int, S: int) -> Tensor:
    """A block in time order ``[T*S, ...]`` -> ``[T, S, ...]`` (step, segment), contiguous."""
    if S == 1:
        return t.view(T, 1, *t.shape[1:])
    return t.view(S, T, *t.shape[1:]).transpose(0, 1).contiguous()


def _write_block(dst: Tensor, src: Tensor, l0: int) -> None:
    """Copy a block ``[T, S, ...]`` into the columns ``l0:`` of ``dst: [rows, L]`` (time order)."""
    T, S = src.shape[:2]
    src = src.transpose(0, 1).reshape(T * S, -1)  # [T*S, rows] (a view when S = 1)
    n = min(T * S, dst.shape[1] - l0)  # the last block may hang over the padding
    dst[:, l0 : l0 + n].copy_(src[:n].t())


def _segment_scan(a, b, h: Tensor, dcum: Tensor | None, At: Tensor, reverse: bool = False) -> Tensor:
    """In place ``b <- h`` for ``h_t = a_t h_{t-1} + b_t`` over one block; returns the final state.

    ``a, b``: scratch pairs of ``[T, S, b, G, N, Dg]``, ``h: [b, G, N, Dg]`` (the state entering
    the block), ``dcum: [T, S, b, G, Dg]`` cumulative delta inside each segment from its entry
    (needed when S > 1). ``reverse`` runs time backwards: ``h_t = a_t h_{t+1} + b_t``.
    """
    (a, a_t), (b, b_t) = a, b
    T, S = a.shape[:2]
    first, last, step = (T - 1, 0, 1) if reverse else (0, T - 1, -1)  # step: offset of the previous step
    seg0 = S - 1 if reverse else 0  # the segment that the carried state enters
    b_t[first][seg0].addcmul_(a_t[first][seg0], h)
    for t in range(T - 2, -1, -1) if reverse else range(1, T):  # all segments at once, from zero states
        torch.addcmul(b_t[t], b_t[t + step], a_t[t], out=b_t[t])  # h_t = a_t h_prev + b_t: [S, b, G, N, Dg]
    if S == 1:
        return b_t[last][0]
    rest = slice(0, S - 1) if reverse else slice(1, S)  # segments that still lack the carried state
    P = _scratch(a, (T, S - 1, *a.shape[2:]), "P")[0]  # decay since segment entry, <= 1: [T, S-1, ...]
    torch.mul(dcum[:, rest, :, :, None, :], At, out=P).exp2_()
    E = b_t[last].clone()  # segment exit states; E[seg0] is already exact: [S, b, G, N, Dg]
    for s in range(S - 2, -1, -1) if reverse else range(1, S):
        E[s].addcmul_(P[last, s if reverse else s - 1], E[s + step])  # carry: the exit state of segment s
    b[:, rest].addcmul_(P, E[None, 1:] if reverse else E[None, :-1])  # add the decayed carried-in state
    return E[0] if reverse else E[S - 1]


def _block_scan(dts: Tensor, p: Tensor, q: Tensor, At: Tensor, h: Tensor, a, out, reverse: bool = False) -> Tensor:
    """States of one block of the recurrence with inputs ``b_t = p_t (x) q_t``; returns the last state.

    ``dts: [T, S, b, G, Dg]`` step sizes, ``p: [T, S, b, G, N]``, ``q: [T, S, b, G, Dg]``,
    ``h: [b, G, N, Dg]`` the state entering the block. Fills the scratch ``a`` with ``exp(delta A)``
    and ``out`` with the states, both ``[T, S, b, G, N, Dg]``.
    """
    torch.mul(dts[..., None, :], At, out=a[0]).exp2_()  # dA_t = exp(delta_t A) = 2^(delta_t A / ln 2)
    torch.mul(p[..., None], q[..., None, :], out=out[0])  # input b_t: [T, S, b, G, N, Dg]
    dcum = None
    if dts.shape[1] > 1:  # cumulative delta inside each segment, from where the scan enters it
        dcum = dts.flip(0).cumsum(0).flip(0) if reverse else dts.cumsum(0)
    return _segment_scan(a, out, h, dcum, At, reverse)


def _readout(C: Tensor, H: Tensor, out: Tensor) -> Tensor:
    """``out[..., 0, d] = sum_n C[..., n] H[..., n, d]`` (a batched matmul for wide channels)."""
    if H.shape[-1] >= 64:
        return torch.matmul(C[..., None, :], H, out=out)  # [..., 1, Dg]
    CH = torch.mul(C[..., None], H, out=_scratch(H, H.shape, "CH")[0])  # [..., N, Dg]
    return torch.sum(CH, dim=-2, keepdim=True, out=out)  # [..., 1, Dg]


def _dot_d(H: Tensor, v: Tensor) -> Tensor:
    """``sum_d H[..., n, d] v[..., d]``: ``[..., N, Dg], [..., Dg] -> [..., N]``."""
    return torch.einsum("...nd,...d->...n", H, v)  # (a batched matrix-vector product is 8x slower)


class _ChunkedScan(torch.autograd.Function):
    """``y = scan(u, delta, A, B, C)`` (no D, no z), ``B, C: [b, G, N, L]``; see the module docstring."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        b, d, L = u.shape
        g, n = B.shape[1], B.shape[2]
        dg = d // g
        T, S = _plan(L, b * d * n, u.device)
        Lb = T * S
        nb = -(-L // Lb)  # blocks
        keep = any(ctx.needs_input_grad)  # inputs saved for backward must be fresh tensors
        tm = [_time_major(t, nb * Lb, None if keep else k) for t, k in ((delta, "dt"), (u, "u"), (B, "B"), (C, "C"))]
        dt, ut = (t.view(-1, b, g, dg) for t in tm[:2])  # [Lp, b, G, Dg]
        Bt, Ct = tm[2:]  # [Lp, b, G, N]
        xt = torch.mul(dt, ut, out=_scratch(dt, dt.shape, "x")[0])  # delta_t u_t: [Lp, b, G, Dg]
        At = (A * LOG2E).view(g, dg, n).transpose(1, 2).contiguous()  # A / ln 2: [G, N, Dg]
        starts = u.new_empty(nb, b, g, n, dg) if keep else None  # the state before each block
        a = _scratch(u, (T, S, b, g, n, dg), "a")  # decays of a block
        states = [_scratch(u, (T, S, b, g, n, dg), f"h{k}") for k in range(min(nb, 2))]  # ping-pong
        yb = _scratch(u, (T, S, b, g, 1, dg), "y")[0]
        y = u.new_empty(b * d, L)
        h = u.new_zeros(b, g, n, dg)  # [b, G, N, Dg]
        for i in range(nb):
            blk = slice(i * Lb, (i + 1) * Lb)
            if keep:
                starts[i].copy_(h)
            H = states[i % 2]
            h = _block_scan(*(_segments(t[blk], T, S) for t in (dt, Bt, xt)), At, h, a, H)
            _readout(_segments(Ct[blk], T, S), H[0], yb)  # y_t = C_t . h_t: [T, S, b, G, 1, Dg]
            _write_block(y, yb, i * Lb)
        if keep:
            ctx.save_for_backward(dt, ut, Bt, Ct, A, starts)
            ctx.plan = (T, S, nb, Lb, L)
        return y.view(b, d, L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor):
        dt, ut, Bt, Ct, A, starts = ctx.saved_tensors
        T, S, nb, Lb, L = ctx.plan
        Lp, b, g, dg = dt.shape
        n, d = Bt.shape[-1], g * dg
        At = (A * LOG2E).view(g, dg, n).transpose(1, 2).contiguous()  # [G, N, Dg]
        An = A.view(g, dg, n).transpose(1, 2)  # natural A: [G, N, Dg]
        gyt = _time_major(gy, Lp, "gy").view(Lp, b, g, dg)  # [Lp, b, G, Dg]
        xt = torch.mul(dt, ut, out=_scratch(dt, dt.shape, "x")[0])  # [Lp, b, G, Dg]
        dnext = _scratch(dt, dt.shape, "dt")[0]  # delta_{t+1}: the decay in the adjoint's recurrence
        dnext[:-1].copy_(dt[1:])
        dnext[-1].zero_()
        g_u, g_dt = dt.new_empty(b * d, L), dt.new_empty(b * d, L)
        g_B, g_C = dt.new_empty(b * g * n, L), dt.new_empty(b * g * n, L)
        gA = dt.new_zeros(g, n, dg)
        a, H, ar, Gr = (_scratch(dt, (T, S, b, g, n, dg), k) for k in ("a", "h0", "ar", "g"))  # dA, h, dA_{t+1}, g
        gxb = _scratch(dt, (T, S, b, g, 1, dg), "y")[0]
        gnext = dt.new_zeros(b, g, n, dg)  # adjoint of the state after the block
        for i in reversed(range(nb)):
            blk = slice(i * Lb, (i + 1) * Lb)
            dts, us, Bs, xs, gys = (_segments(t[blk], T, S) for t in (dt, ut, Bt, xt, gyt))
            _block_scan(dts, Bs, xs, At, starts[i], a, H)  # recompute the states h_t
            # adjoint g_t = C_t gy_t + dA_{t+1} g_{t+1}: the same scan, run backwards in time
            dnexts, Cs = _segments(dnext[blk], T, S), _segments(Ct[blk], T, S)
            gnext = _block_scan(dnexts, Cs, gys, At, gnext, ar, Gr, reverse=True).clone()  # [b, G, N, Dg]
            G = Gr[0]  # adjoints g_t: [T, S, b, G, N, Dg]
            _write_block(g_C, _dot_d(H[0], gys), i * Lb)  # dy_t/dC_t = h_t
            _write_block(g_B, _dot_d(G, xs), i * Lb)  # dh_t/dB_t = delta_t u_t
            gx = _readout(Bs, G, gxb)[..., 0, :]  # gradient of delta_t u_t: [T, S, b, G, Dg]
            # W_t = g_t * h_{t-1} * dA_t: the gradient reaching delta_t * A through dA_t
            G.mul_(a[0])
            G[1:].mul_(H[0][:-1])
            G[0, 1:].mul_(H[0][T - 1, :-1])
            G[0, 0].mul_(starts[i])
            gA += (G * dts[..., None, :]).sum((0, 1, 2))  # [G, N, Dg]
            _write_block(g_dt, torch.addcmul((G * An).sum(-2), gx, us), i * Lb)  # [T, S, b, G, Dg]
            _write_block(g_u, gx * dts, i * Lb)
        return (
            g_u.view(b, d, L),
            g_dt.view(b, d, L),
            gA.transpose(1, 2).reshape(d, n),
            g_B.view(b, g, n, L),
            g_C.view(b, g, n, L),
        )
