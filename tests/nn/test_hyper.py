"""Hyper AD Plug-in: identity at init, per-image weights, a hand-written reference, the release's bugs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adlib.nn.hyper import HyperConfig, HyperPlugin


def plugin(dim=12, gate=0.7, **kw) -> HyperPlugin:
    torch.manual_seed(0)
    p = HyperPlugin(dim, HyperConfig(hidden=8, **kw)).double()
    with torch.no_grad():
        p.gate.fill_(gate)
        for hyper in (p.down, p.up):  # biases and norm affines off their zero / one init, so each term shows
            for t in (hyper.b1, hyper.b2, hyper.norm.bias):
                t.normal_(0.0, 0.5)
            hyper.norm.weight.uniform_(0.5, 1.5)
    return p


def images(B=4, C=12, H=5, W=3, seed=1) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_identity_plus_class_embedding_at_init() -> None:
    p = HyperPlugin(12, HyperConfig(embed_dim=7)).double()
    assert p.gate.item() == 0.0
    x, e = images(), torch.randn(4, 7, dtype=torch.float64)
    assert torch.equal(p(x), x)
    torch.testing.assert_close(p(x, e), x + p.embed(e)[:, :, None, None], rtol=0, atol=0)
    plain = HyperPlugin(12).double()  # E already has C channels: added as it is, no projection
    assert plain.embed is None
    e12 = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(plain(x, e12), x + e12[:, :, None, None], rtol=0, atol=0)
    p(x, e).square().sum().backward()
    assert p.gate.grad.abs() > 0  # the gate learns from the first step; the adapter's output reaches it


def test_one_image_does_not_depend_on_the_rest_of_the_batch() -> None:
    p = plugin().train()
    x = images()
    alone = torch.cat([p(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(p(x), alone, rtol=1e-12, atol=1e-12)
    other = x.clone()
    other[1:] = images(3, seed=2)  # change the other images
    torch.testing.assert_close(p(other)[0], p(x)[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(p(x), x)  # the adapter is on (gate 0.7)


def test_the_releases_batch_averaging_leaks_across_images() -> None:
    p = plugin(latent_pool="batch")
    x = images()
    other = x.clone()
    other[1:] = images(3, seed=2)
    assert (p(other)[0] - p(x)[0]).abs().max() > 1e-3
    q = plugin(latent_pool="image")  # same weights, per-image latent
    q.load_state_dict(p.state_dict())
    torch.testing.assert_close(q(x[:1]), p(x[:1]))  # a batch of one: both pools agree


def test_against_a_hand_written_adapter() -> None:
    p, x = plugin(), images(B=2)
    for i in range(2):
        tokens = x[i].flatten(1).T  # [H*W, C]: one token per position
        z = F.relu(p.down.embed(F.layer_norm(tokens, (12,), p.down.norm.weight, p.down.norm.bias))).mean(0)
        W_down = (z @ p.down.w1 + p.down.b1).view(12, 8)
        h = tokens @ W_down + (z @ p.down.w2 + p.down.b2)  # [H*W, 8]
        h = F.silu(h[:, :4]) * h[:, 4:]  # SwiGLU: [H*W, 4]
        z = F.relu(p.up.embed(F.layer_norm(h, (4,), p.up.norm.weight, p.up.norm.bias))).mean(0)
        W_up = (z @ p.up.w1 + p.up.b1).view(4, 12)
        out = tokens + 0.7 * (h @ W_up + (z @ p.up.w2 + p.up.b2))  # [H*W, C]
        torch.testing.assert_close(p(x)[i], out.T.reshape(12, 5, 3))


def test_tokens_are_positions() -> None:
    p, x = plugin(), images(B=1)
    tokens = p.to_tokens(x)
    assert torch.equal(tokens[0, 2 * 3 + 1], x[0, :, 2, 1])  # token r*W + c is the channel vector at (r, c)
    bad = plugin(tokens="reshape").to_tokens(x)
    assert not torch.equal(bad[0, 2 * 3 + 1], x[0, :, 2, 1])  # the release's reshape mixes positions
    assert torch.equal(p.from_tokens(tokens, x.shape), x)
    q, x2 = plugin(tokens="reshape"), images(B=2)
    assert torch.equal(q.to_tokens(x2), x2.reshape(2, 15, 12))  # the release's layout, image by image
    assert torch.equal(q.from_tokens(q.to_tokens(x2), x2.shape), x2)


def test_generated_weights_are_per_image() -> None:
    p, x = plugin(), images()
    W, b = p.down(p.to_tokens(x))
    assert W.shape == (4, 12, 8) and b.shape == (4, 8)
    assert (W[0] - W[1]).abs().max() > 0
    Wb, _ = plugin(latent_pool="batch").down(p.to_tokens(x))
    assert torch.equal(Wb[0], Wb[1])  # one adapter for the whole batch


def test_batchnorm_token_norm_couples_images_in_training() -> None:
    p, x = plugin(token_norm="batch").train(), images()
    other = x.clone()
    other[1:] = images(3, seed=2)
    assert (p(other)[0] - p(x)[0]).abs().max() > 1e-3
    p.eval()  # running statistics: independent again
    torch.testing.assert_close(p(other)[0], p(x)[0], rtol=1e-12, atol=1e-12)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="bad HyperConfig.*latent_pool='dataset'"):
        HyperPlugin(8, HyperConfig(latent_pool="dataset"))
    with pytest.raises(ValueError, match="tokens='transpose'"):
        HyperPlugin(8, HyperConfig(tokens="transpose"))


def test_the_gate_starts_where_the_config_says() -> None:
    assert float(HyperPlugin(8).gate) == 0.0  # the release
    p = HyperPlugin(8, HyperConfig(gate_init=1.0)).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tokens = p.to_tokens(x)
    torch.testing.assert_close(p(x), p.from_tokens(tokens + p.adapter(tokens), x.shape))  # g = 1: the full adapter
