"""Selective scan: the loop against a hand computation and numpy, the chunked scan against the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adlib.nn import scan
from adlib.nn.scan import selective_scan

METHODS = ("sequential", "chunked")


def make(b, d, n, L, groups=None, dt=(0.001, 0.1), dtype=torch.float32, seed=0):
    """Random inputs with delta uniform in ``dt`` and A = -[1..N] times a per-channel factor."""
    g = torch.Generator().manual_seed(seed)
    bc_shape = (b, n, L) if groups is None else (b, groups, n, L)
    u = torch.randn(b, d, L, generator=g, dtype=torch.float64)
    delta = torch.empty(b, d, L, dtype=torch.float64).uniform_(*dt, generator=g)
    A = -torch.arange(1, n + 1, dtype=torch.float64) * torch.empty(d, 1, dtype=torch.float64).uniform_(
        0.5, 2, generator=g
    )
    B = torch.randn(*bc_shape, generator=g, dtype=torch.float64)
    C = torch.randn(*bc_shape, generator=g, dtype=torch.float64)
    D = torch.randn(d, generator=g, dtype=torch.float64)
    z = torch.randn(b, d, L, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (u, delta, A, B, C, D, z)]


def numpy_scan(u, delta, A, B, C, D, z, delta_bias=None, softplus=False):
    """An independent reference: every index written out, float64."""
    u, delta, A, B, C, D, z = (np.asarray(t, dtype=np.float64) for t in (u, delta, A, B, C, D, z))
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, dtype=np.float64)[:, None]
    if softplus:
        delta = np.log1p(np.exp(delta))
    b, d, L = u.shape
    if B.ndim == 3:
        B, C = B[:, None], C[:, None]
    per_group = d // B.shape[1]
    y = np.zeros((b, d, L))
    for i in range(b):
        for c in range(d):
            Bc, Cc = B[i, c // per_group], C[i, c // per_group]  # [N, L]
            h = np.zeros(A.shape[1])
            for t in range(L):
                h = np.exp(delta[i, c, t] * A[c]) * h + delta[i, c, t] * Bc[:, t] * u[i, c, t]
                y[i, c, t] = Cc[:, t] @ h + D[c] * u[i, c, t]
            y[i, c] *= z[i, c] / (1 + np.exp(-z[i, c]))  # y * silu(z)
    return y


@pytest.fixture
def plan(monkeypatch):
    """Force the chunked scan's (steps per segment, segments per block)."""

    def force(T: int, S: int) -> None:
        monkeypatch.setattr(scan, "_plan", lambda L, state, device: (T, S))

    return force


@pytest.mark.parametrize("method", METHODS)
def test_by_hand(method) -> None:
    # dA = exp(1 * -ln 2) = 1/2;  h1 = 1*1*2 = 2, h2 = 2/2 + 1*2*4 = 9, h3 = 9/2 + 1*1*8 = 12.5
    # y = C h + D u = (2 + 1, 9 + 2, 25 + 4)
    u = torch.tensor([[[2.0, 4.0, 8.0]]])
    delta = torch.ones(1, 1, 3)
    A = torch.tensor([[-math.log(2.0)]])
    B = torch.tensor([[[1.0, 2.0, 1.0]]])
    C = torch.tensor([[[1.0, 1.0, 2.0]]])
    y = selective_scan(u, delta, A, B, C, D=torch.tensor([0.5]), method=method)
    torch.testing.assert_close(y, torch.tensor([[[3.0, 11.0, 29.0]]]))
    z = torch.tensor([[[0.0, 1.0, -2.0]]])  # gate: y * z * sigmoid(z)
    gated = selective_scan(u, delta, A, B, C, D=torch.tensor([0.5]), z=z, method=method)
    torch.testing.assert_close(gated, torch.tensor([[[0.0, 11.0 / (1 + math.exp(-1)), -58.0 / (1 + math.exp(2))]]]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("groups", [None, 2])
def test_against_numpy(method, groups, plan) -> None:
    plan(4, 3)  # blocks of 12 steps: several blocks and segments, padding at the end (L = 29)
    u, delta, A, B, C, D, z = make(2, 4, 3, 29, groups=groups, dt=(-2.0, 1.0), dtype=torch.float64)
    bias = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    y = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, method=method)
    ref = numpy_scan(u, delta, A, B, C, D, z, delta_bias=bias, softplus=True)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


CASES = [  # (b, D, N, L, groups, forced plan or None)
    (1, 16, 16, 1024, None, None),  # the benchmark's small shape, default plan (S > 1)
    (2, 300, 16, 100, None, None),  # a large state, default plan (S = 1, several blocks, padding)
    (3, 5, 4, 37, None, (5, 3)),  # L not a multiple of the block, segments
    (2, 6, 16, 50, 3, (7, 1)),  # groups, one segment per block
    (2, 8, 16, 64, 2, (4, 4)),  # groups, blocks that divide L
    (1, 3, 2, 1, None, (4, 2)),  # a single step
]


@pytest.mark.parametrize("b, d, n, L, groups, forced", CASES)
@pytest.mark.parametrize("dt", [(0.0001, 0.001), (0.001, 0.1), (1.0, 5.0)], ids=["weak", "init", "strong"])
def test_chunked_equals_sequential(b, d, n, L, groups, forced, dt, plan, one_thread) -> None:
    if forced:
        plan(*forced)
    u, delta, A, B, C, D, z = make(b, d, n, L, groups=groups, dt=dt)
    y_seq = selective_scan(u, delta, A, B, C, D, z, method="sequential")
    y_fast = selective_scan(u, delta, A, B, C, D, z, method="chunked")
    assert torch.isfinite(y_fast).all()
    torch.testing.assert_close(y_fast, y_seq, rtol=1e-5, atol=1e-5)


def test_softplus_and_bias_float32(plan) -> None:
    plan(6, 4)
    u, delta, A, B, C, D, z = make(2, 6, 5, 70, dt=(-3.0, 3.0))
    bias = torch.linspace(-1, 1, 6)
    kw = dict(D=D, z=z, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(
        selective_scan(u, delta, A, B, C, method="chunked", **kw),
        selective_scan(u, delta, A, B, C, method="sequential", **kw),
        rtol=1e-5,
        atol=1e-5,
    )


def test_strong_decay_is_the_regime_that_breaks_a_factorised_form(plan) -> None:
    """Cumulative delta*A far below -88 inside one chunk and -900 over the sequence: still exact."""
    plan(32, 32)
    u, delta, A, B, C, D, z = make(1, 4, 16, 1024, dt=(0.5, 1.5))
    cum = delta[0, :, :32].cumsum(-1)[:, :, None] * A[:, None, :]  # within the first chunk: [D, 32, N]
    assert cum.min() < -88 and (delta[0].sum(-1)[:, None] * A).min() < -900
    assert torch.isinf(torch.exp(-cum)).any()  # exp(-cumsum): the factorised form overflows here
    y = selective_scan(u, delta, A, B, C, D, z, method="chunked")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, selective_scan(u, delta, A, B, C, D, z, method="sequential"), rtol=1e-5, atol=1e-5)


GRAD_CASES = [  # (b, D, N, L, groups, plan)
    (2, 3, 4, 23, None, (4, 3)),  # segments, several blocks, padding
    (1, 4, 3, 20, 2, (6, 1)),  # one segment per block, padding
    (2, 2, 2, 9, None, (16, 1)),  # one block longer than the sequence
]


@pytest.mark.parametrize("b, d, n, L, groups, forced", GRAD_CASES)
def test_gradients_equal_the_loops(b, d, n, L, groups, forced, plan) -> None:
    plan(*forced)
    inputs = make(b, d, n, L, groups=groups, dt=(-1.0, 2.0), dtype=torch.float64)
    bias = torch.linspace(-0.3, 0.3, d, dtype=torch.float64)
    grads = {}
    for method in METHODS:
        leaves = [t.clone().requires_grad_() for t in (*inputs, bias)]
        u, delta, A, B, C, D, z, db = leaves
        y = selective_scan(u, delta, A, B, C, D, z, delta_bias=db, delta_softplus=True, method=method)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        grads[method] = torch.autograd.grad(y, leaves, gy)
    for name, gs, gc in zip("u delta A B C D z delta_bias".split(), *grads.values(), strict=True):
        torch.testing.assert_close(gc, gs, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


def test_gradcheck(plan) -> None:
    plan(3, 2)
    u, delta, A, B, C, _, _ = make(1, 2, 2, 8, dt=(0.1, 1.0), dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C)]
    assert torch.autograd.gradcheck(lambda *t: selective_scan(*t, method="chunked"), leaves)


def test_strong_decay_gradients_are_finite(one_thread) -> None:
    u, delta, A, B, C, D, z = (t.requires_grad_() for t in make(2, 8, 16, 1024, dt=(1.0, 5.0)))
    y = selective_scan(u, delta, A, B, C, D, z, method="chunked")
    y.square().mean().backward()
    assert all(torch.isfinite(t.grad).all() for t in (u, delta, A, B, C, D, z))


def test_methods_and_dtypes() -> None:
    u, delta, A, B, C, _, _ = make(1, 3, 2, 10)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C), selective_scan(u, delta, A, B, C, method="chunked"))
    y64 = selective_scan(*(t.double() for t in (u, delta, A, B, C)))
    assert y64.dtype == torch.float64
    with pytest.raises(ValueError, match="method"):
        selective_scan(u, delta, A, B, C, method="blelloch")
    with pytest.raises(ValueError, match="shapes"):
        selective_scan(u, delta, A, B.view(1, 1, 2, 10).expand(1, 2, 2, 10), C)  # 3 channels in 2 groups
    if scan._mamba_ssm_fn() is None:
        with pytest.raises(RuntimeError, match="mamba_ssm"):
            selective_scan(u, delta, A, B, C, method="mamba_ssm")


def test_reused_scratch_buffers_hold_nothing_stale(plan) -> None:
    """Scratch buffers are kept between calls: fill them with NaN, the next call must not notice."""
    plan(4, 3)
    inputs = make(2, 3, 4, 23, dt=(0.1, 1.0), dtype=torch.float64)
    grads = {}
    for method in ("chunked", "chunked", "sequential"):  # the first call creates the buffers
        for buf, _ in scan._WORKSPACE.__dict__.get("bufs", {}).values():
            buf.fill_(float("nan"))
        leaves = [t.clone().requires_grad_() for t in inputs]
        y = selective_scan(*leaves, method=method)
        grads[method] = (y.detach(), *torch.autograd.grad(y.sin().sum(), leaves))
    for got, want in zip(grads["chunked"], grads["sequential"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_the_mamba_ssm_kernel_gets_every_argument_in_its_order(monkeypatch) -> None:
    """A stand-in for mamba_ssm's selective_scan_fn records its call (no GPU needed): "mamba_ssm" hands over
    every argument in the kernel's positional order; "auto" takes the kernel only for CUDA tensors."""
    u, delta, A, B, C, D, z = make(1, 3, 2, 10)
    bias, calls = torch.rand(3), []
    monkeypatch.setattr(scan, "_mamba_ssm_fn", lambda: lambda *args: calls.append(args) or "kernel")
    assert selective_scan(u, delta, A, B, C, D, z, bias, True, method="mamba_ssm") == "kernel"
    assert len(calls) == 1
    assert all(a is b for a, b in zip(calls[0], (u, delta, A, B, C, D, z, bias, True), strict=True))
    assert isinstance(selective_scan(u, delta, A, B, C, D, z, bias, True), torch.Tensor) and len(calls) == 1
    monkeypatch.setattr(scan, "_mamba_ssm_fn", lambda: None)  # not installed
    with pytest.raises(RuntimeError, match="method='mamba_ssm' needs the mamba_ssm package with its CUDA kernel"):
        selective_scan(u, delta, A, B, C, method="mamba_ssm")


def test_low_precision_inputs_run_in_float32() -> None:
    args = make(2, 4, 3, 40, dtype=torch.bfloat16)
    bias = torch.rand(4).to(torch.bfloat16)
    y = selective_scan(*args, delta_bias=bias, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = selective_scan(*(t.float() for t in args), delta_bias=bias.float(), delta_softplus=True)
    assert torch.equal(y, ref.to(torch.bfloat16))  # the float32 computation, rounded once at the end


def test_sequential_runs_the_loop(monkeypatch) -> None:
    seen, loop = [], scan.scan_sequential
    monkeypatch.setattr(scan, "scan_sequential", lambda *a: seen.append("loop") or loop(*a))
    args = make(1, 3, 2, 10)[:5]
    selective_scan(*args, method="sequential")
    assert seen == ["loop"]
    selective_scan(*args, method="chunked"), selective_scan(*args)  # the default on a CPU: chunked
    assert seen == ["loop"]
