"""Mamba (VSS / SS2D) and CNN blocks: MambaAD's init, an independent SS2D reference, receptive fields."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adlib.nn.decoder import count_parameters
from adlib.nn.mamba import SS2D, CNNBlock, MambaConfig, VSSBlock, swiglu
from adlib.nn.scan import scan_sequential
from adlib.nn.scan2d import scan_orders

torch.manual_seed(0)


@pytest.mark.parametrize("variant", ["mambaad", "dvad_text"])
@pytest.mark.parametrize("K", [1, 2, 4, 8])
def test_shapes(variant, K, one_thread) -> None:
    block = VSSBlock(20, MambaConfig(directions=K, variant=variant))
    x = torch.randn(2, 20, 6, 10)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())
    assert CNNBlock(20)(x).shape == x.shape


def test_mambaad_init() -> None:
    s = SS2D(40)  # E = 80, dt rank ceil(40 / 16) = 3, d_state 16, 8 directions
    E, N, K, R = 80, 16, 8, 3
    assert s.x_proj.shape == (K, R + 2 * N, E) and s.dt_weight.shape == (K, E, R)
    A = -torch.exp(s.A_log)
    torch.testing.assert_close(A, -torch.arange(1, N + 1.0).expand(K, E, N))  # S4D real: A = -[1..16]
    assert torch.equal(s.D, torch.ones(K, E))
    dt = F.softplus(s.dt_bias)  # the initial step sizes
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.log().std() > 0.9  # log-uniform over two decades: std of log is ln(100)/sqrt(12) = 1.33
    assert s.dt_weight.abs().max() <= R**-0.5
    assert 0.9 * E**-0.5 < s.x_proj.abs().max() <= E**-0.5  # nn.Linear's init, fan-in E
    assert s.in_proj.bias is None and s.out_proj.bias is None and s.in_proj.weight.std() < 0.03


def reference_scan_map(s: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D's scan over K orders, direction by direction with the sequential loop, put back by scatter."""
    B, E, H, W = x.shape
    N, R = s.cfg.d_state, s.rank
    out = torch.zeros(B, E, H * W, dtype=x.dtype)
    for k, order in enumerate(scan_orders(H, W, s.cfg.directions, s.cfg.path)):
        seq = x.flatten(2)[:, :, order]  # [B, E, L]
        proj = torch.einsum("ce,bel->bcl", s.x_proj[k], seq)  # [B, R + 2N, L]
        dt = torch.einsum("er,brl->bel", s.dt_weight[k], proj[:, :R]) + s.dt_bias[k][:, None]
        Bk, Ck = proj[:, None, R : R + N], proj[:, None, R + N :]  # [B, 1, N, L]
        y = scan_sequential(seq, F.softplus(dt), -torch.exp(s.A_log[k]), Bk, Ck)
        y = y + s.D[k][:, None] * seq
        out[:, :, order] += y  # sequence position i belongs to cell order[i]
    return out.view(B, E, H, W)


@pytest.mark.parametrize("path", ["hilbert", "snake"])
def test_scan_map_equals_a_direction_by_direction_reference(path, one_thread) -> None:
    s = SS2D(16, MambaConfig(path=path)).double()
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(s.scan_map(x), reference_scan_map(s, x), rtol=1e-10, atol=1e-10)


def test_forward_is_mambaads_pipeline() -> None:
    s = SS2D(16).double()
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    t = x.permute(0, 2, 3, 1)
    u, z = s.in_proj(t).chunk(2, dim=-1)
    u = F.silu(s.conv(u.permute(0, 3, 1, 2)))
    y = s.out_norm(reference_scan_map(s, u).permute(0, 2, 3, 1)) * F.silu(z)
    torch.testing.assert_close(s(x), s.out_proj(y).permute(0, 3, 1, 2))
    block = VSSBlock(16).double()
    block.ss2d.load_state_dict(s.state_dict())
    for scale in (1.0, 1e-3):  # at a variance of 1e-6, MambaAD's eps = 1e-6 is not the default 1e-5
        xs = scale * x
        pre = F.layer_norm(xs.permute(0, 2, 3, 1), (16,), block.norm.weight, block.norm.bias, eps=1e-6)
        torch.testing.assert_close(block(xs), xs + s(pre.permute(0, 3, 1, 2)))  # x + SS2D(LN(x))


def test_dvad_text_variant_pipeline() -> None:
    s = SS2D(16, MambaConfig(variant="dvad_text")).double()
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    t = x.permute(0, 2, 3, 1)
    u = swiglu(s.conv(s.in_proj(t).permute(0, 3, 1, 2)), dim=1)  # linear, conv, SwiGLU
    y = s.out_norm(reference_scan_map(s, u).permute(0, 2, 3, 1))  # SSM
    side = F.silu(s.bypass(t)[..., :32]) * s.bypass(t)[..., 32:]  # bypass: linear + SwiGLU
    torch.testing.assert_close(s(x), s.out_proj(torch.cat([y, side], -1)).permute(0, 3, 1, 2))


def change_map(block, x, cell) -> torch.Tensor:
    """|block(x + bump at cell) - block(x)| summed over channels: [H, W]."""
    bumped = x.clone()
    C = x.shape[1]  # not a constant over channels, which a LayerNorm would erase
    bumped[:, :, cell[0], cell[1]] += torch.linspace(-1, 1, C, dtype=x.dtype)
    with torch.no_grad():
        return (block(bumped) - block(x)).abs().sum(dim=(0, 1))


@pytest.mark.parametrize("variant", ["mambaad", "dvad_text"])
def test_mamba_sees_the_opposite_corner(variant, one_thread) -> None:
    block = VSSBlock(16, MambaConfig(variant=variant)).double()
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    # small at init (~1e-9: the states decay over the ~60 steps between the corners and the output
    # projection starts at std 0.02), but not zero; float64 noise would be ~1e-16, see the K = 1 case
    assert change_map(block, x, (0, 0))[7, 7] > 1e-12
    assert change_map(block, x, (7, 7))[0, 0] > 1e-12


def test_one_direction_is_causal(one_thread) -> None:
    """With K = 1 (a raster sweep) the last cell cannot reach the first; K = 2 adds the way back."""
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    one = VSSBlock(16, MambaConfig(directions=1, path="sweep")).double()
    assert change_map(one, x, (7, 7))[0, 0] == 0  # exactly: no numerical leak either
    assert change_map(one, x, (0, 0))[7, 7] > 1e-12
    two = VSSBlock(16, MambaConfig(directions=2, path="sweep")).double()
    assert change_map(two, x, (7, 7))[0, 0] > 1e-12


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_cnn_block_is_local(norm) -> None:
    block = CNNBlock(8, norm=norm).double().eval()
    x = torch.randn(1, 8, 12, 12, dtype=torch.float64)
    change = change_map(block, x, (0, 0))
    r, c = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    inside = torch.maximum(r, c) <= 3  # the 7x7 branch's receptive field: radius 3
    assert (change[inside] > 0).all()
    assert (change[~inside] == 0).all()


def test_instance_norm_makes_the_cnn_block_slightly_global() -> None:
    """DVAD's InstanceNorm: per-map statistics couple every position, weakly. Over 10 seeded blocks and inputs the
    far corner always moves, always less than the poked position, and typically (median) under a tenth of it."""
    ratios = []
    for seed in range(10):
        torch.manual_seed(seed)
        block = CNNBlock(8).double()
        change = change_map(block, torch.randn(1, 8, 12, 12, dtype=torch.float64), (0, 0))
        assert 0 < change[11, 11] < change[0, 0]
        ratios.append(float(change[11, 11] / change[0, 0]))
    assert sorted(ratios)[len(ratios) // 2] < 0.1


def test_cnn_block_branches() -> None:
    block = CNNBlock(8).double()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    b5, b7 = block.branches(x)
    assert block.branch[0][1][0].kernel_size == (5, 5) and block.branch[1][1][0].kernel_size == (7, 7)
    assert block.branch[1][1][0].groups == 8  # depthwise
    torch.testing.assert_close(block(x), block.fuse(torch.cat([b5, b7], 1)))
    mean = b5.mean(dim=(2, 3))  # each branch ends with IN + SiLU: SiLU of a standardised map
    assert mean.abs().max() < 1.0 and (b5 >= -0.2785).all()  # SiLU's minimum is -0.2785
    assert math.isclose(block.fuse.weight.std().item(), math.sqrt(2 / 8), rel_tol=0.3)


@pytest.mark.parametrize("variant", ["mambaad", "dvad_text"])
def test_ss2d_parameter_count_by_hand(variant) -> None:
    C, K, N = 17, 2, 16  # C = 17: dt rank ceil(17 / 16) = 2
    E, R, text = 2 * C, 2, variant == "dvad_text"
    conv_ch = 2 * E if text else E  # the text's conv sees both SwiGLU halves
    expected = (
        C * 2 * E  # in_proj, no bias
        + conv_ch * 3 * 3 + conv_ch  # depthwise 3x3, with bias
        + K * (R + 2 * N) * E + K * E * R + K * E  # per direction: x_proj, dt_proj weight and bias
        + K * E * N + K * E  # A_log, D
        + 2 * E  # out_norm
        + (C * 2 * E if text else 0)  # the text's bypass, no bias
        + (2 * E if text else E) * C  # out_proj, no bias
    )  # fmt: skip
    s = SS2D(C, MambaConfig(directions=K, variant=variant))
    assert s.rank == R and count_parameters(s) == expected


def test_cnn_block_parameter_count_by_hand() -> None:
    C = 6
    pointwise = C * C + C  # 1x1 conv with bias; InstanceNorm has no affine parameters
    expected = sum(pointwise + C * k * k + pointwise for k in (5, 7)) + 2 * C * C + C  # kxk depthwise, no bias; fuse
    assert count_parameters(CNNBlock(C)) == expected


def test_cnn_block_init_scales() -> None:
    torch.manual_seed(0)
    block = CNNBlock(64, norm="none")
    pointwise, depthwise = block.branch[1][0][0].weight, block.branch[1][1][0].weight  # 1x1 and 7x7
    assert math.isclose(pointwise.std().item(), math.sqrt(2 / 64), rel_tol=0.06)  # fan_out = 64
    assert math.isclose(depthwise.std().item(), math.sqrt(2 / 49), rel_tol=0.06)  # fan_out = 7 * 7 * 64 / 64
    assert abs(pointwise.mean().item()) < 0.1 * math.sqrt(2 / 64)


def test_orders_are_cached_per_map_size() -> None:
    s, cpu = SS2D(8, MambaConfig(directions=2)), torch.device("cpu")
    first = s.orders(4, 4, cpu)
    assert torch.equal(s.orders(4, 6, cpu), scan_orders(4, 6, 2, "hilbert"))  # not the 4 x 4 orders again
    assert s.orders(4, 4, cpu) is first


def test_mean_merge_is_the_sum_over_directions(one_thread) -> None:
    summed = SS2D(16, MambaConfig(directions=4)).double()
    mean = SS2D(16, MambaConfig(directions=4, merge="mean")).double()
    mean.load_state_dict(summed.state_dict())
    x = torch.randn(1, 32, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(mean.scan_map(x), summed.scan_map(x) / 4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="variant must be 'mambaad' or 'dvad_text', got 'paper'"):
        SS2D(8, MambaConfig(variant="paper"))
    with pytest.raises(ValueError, match=r"norm must be one of \['instance', 'batch', 'none'\], got 'layer'"):
        CNNBlock(8, norm="layer")
