"""DVAD's decoder blocks: fusion and patch-expanding shapes, the GLD block's formula and subsets, stage sizes."""

from __future__ import annotations

import pytest
import torch

from adlib.nn.decoder import GLDBlock, GLDConfig, GLDDecoder, MultiScaleFusion, PatchExpand
from adlib.nn.mamba import MambaConfig

SUBSETS = [(m, c, h) for m in (True, False) for c in (True, False) for h in (True, False) if m or c or h]


def small(**kw) -> GLDConfig:
    return GLDConfig(mamba=MambaConfig(directions=2), **kw)


def test_fusion_brings_three_scales_to_one_bottleneck(one_thread) -> None:
    maps = [torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4)]
    out = MultiScaleFusion([4, 6, 8], 12)(maps)
    assert out.shape == (2, 12, 2, 2)  # half the deepest map's size, as MambaAD's 8x8 bottleneck at 256 px


def test_patch_expand_doubles_the_size() -> None:
    x = torch.randn(2, 16, 3, 5)
    y = PatchExpand(16, 8)(x)
    assert y.shape == (2, 8, 6, 10)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 6, 10), atol=1e-5, rtol=0)  # LayerNorm over channels


@pytest.mark.parametrize("flags", SUBSETS, ids=lambda f: "".join("MCH"[i] for i, on in enumerate(f) if on))
def test_every_subset_of_branches_runs(flags, one_thread) -> None:
    block = GLDBlock(8, small(use_mamba=flags[0], use_cnn=flags[1], use_hyper=flags[2], experts=3), embed_dim=5)
    assert block.moe.gate.in_channels == 8 * sum(flags)  # the MoE sees the concatenation of the active branches
    x = torch.randn(2, 8, 4, 4)
    y = block(x, torch.randn(2, 5))
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(block.moe.last_gates.sum(1), torch.ones(2, 4, 4))


def test_gld_block_is_moe_of_concatenated_branches_plus_input(one_thread) -> None:
    torch.manual_seed(0)
    block = GLDBlock(8, small(experts=4), embed_dim=5).eval()
    x, e = torch.randn(2, 8, 4, 4), torch.randn(2, 5)
    feats = block.branch_outputs(x, e)  # [F_global, F_local, F_dynamic]
    mixed = torch.cat(feats, dim=1)  # F_mix: [2, 24, 4, 4]
    G = torch.softmax(block.moe.gate(mixed), dim=1)  # [2, 4, 4, 4]
    want = x + sum(G[:, m : m + 1] * ex(mixed) for m, ex in enumerate(block.moe.experts))
    torch.testing.assert_close(block(x, e), want)


def test_no_branch_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one of use_mamba, use_cnn, use_hyper"):
        GLDBlock(8, small(use_mamba=False, use_cnn=False, use_hyper=False))


def test_decoder_stages_double_in_size(one_thread) -> None:
    dec = GLDDecoder((16, 8, 8), (1, 1, 0), small(experts=2))
    outs = dec(torch.randn(2, 16, 2, 2))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 2, 2), (2, 8, 4, 4), (2, 8, 8, 8)]
    assert len(dec.blocks()) == 2
    with pytest.raises(ValueError, match="one entry per stage"):
        GLDDecoder((16, 8), (1,), small())


def test_the_fusion_bottleneck_adds_its_skip_path() -> None:
    """ResidualDown = relu(conv path + skip path): with the conv path zeroed, the skip path is what is left."""
    from adlib.nn.decoder import ResidualDown

    torch.manual_seed(0)
    block = ResidualDown(3, 5).eval()
    with torch.no_grad():
        block.conv2[0].weight.zero_()
        block.conv2[1].bias.zero_()
        x = torch.randn(2, 3, 6, 6)
        torch.testing.assert_close(block(x), torch.relu(block.skip(x)))
        assert block(x).abs().sum() > 0
