"""SimpleNet: the truncated l1 loss by hand, shapes, determinism, and a behavioural check."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from adlib.methods.base import TrainBudget, flatten_patches
from adlib.methods.simplenet import SimpleNet, SimpleNetConfig, fit, noise_sigma

pytestmark = pytest.mark.usefixtures("one_thread")


def test_modules_and_defaults() -> None:
    cfg = SimpleNetConfig()
    assert (cfg.noise_std, cfg.margin, cfg.hidden) == (0.015, 0.5, 1024)
    net = SimpleNet(12, cfg)
    assert isinstance(net.adaptor, torch.nn.Linear) and net.adaptor.weight.shape == (12, 12)
    body = list(net.discriminator.body)
    assert isinstance(body[0], torch.nn.Linear) and body[0].out_features == 1024
    assert isinstance(body[1], torch.nn.BatchNorm1d)
    assert isinstance(body[2], torch.nn.LeakyReLU) and body[2].negative_slope == 0.2
    assert net.discriminator.tail.out_features == 1 and net.discriminator.tail.bias is None  # the release's D


def test_score_is_minus_discriminator_and_uses_hook() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 6, 4, 5, generator=g)  # [N, C, h, w]
    net = SimpleNet(6, SimpleNetConfig(hidden=16))
    net.reset_parameters(torch.Generator().manual_seed(1))
    s = net.score(feats)
    assert s.shape == (3, 4, 5)
    net.eval()
    with torch.no_grad():
        expect = -net(flatten_patches(feats)).reshape(3, 4, 5)
    torch.testing.assert_close(s, expect)
    net.features_transform = lambda x: 2 * x  # hook applied before the adaptor
    with torch.no_grad():
        expect2 = -net(flatten_patches(2 * feats)).reshape(3, 4, 5)
    torch.testing.assert_close(net.score(feats), expect2)
    torch.testing.assert_close(net.score(feats, transform=False), expect)


def test_training_is_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 6, 4, 4, generator=g)
    cfg = SimpleNetConfig(hidden=32)
    a = fit(feats, cfg, TrainBudget(steps=8, patches_per_step=32, seed=3)).score(feats)
    b = fit(feats, cfg, TrainBudget(steps=8, patches_per_step=32, seed=3)).score(feats)
    c = fit(feats, cfg, TrainBudget(steps=8, patches_per_step=32, seed=4)).score(feats)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def _low_rank_gaussian(n: int, shift: float, g: torch.Generator, basis: torch.Tensor, mu: torch.Tensor):
    """Gaussian patch features on a 2-d affine subspace of R^16; `shift` moves them off it."""
    c, r = basis.shape[0], 2
    z = torch.randn(n, 8, 8, r, generator=g)  # [N, h, w, r]
    f = mu + z @ basis[:, :r].T  # [N, h, w, C]
    if shift:
        e = torch.randn(n, 8, 8, c - r, generator=g)
        f = f + shift * (e / e.norm(dim=-1, keepdim=True)) @ basis[:, r:].T
    return f.permute(0, 3, 1, 2).contiguous()  # [N, C, h, w]


def test_scores_shifted_features_higher() -> None:
    # Normal features: Gaussian on a low-dimensional subspace (as real features lie near a
    # manifold); anomalies: the same plus a 0.2 step off the subspace. SimpleNet's noise teaches
    # the discriminator what "off the normal set" looks like.
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    mu = 0.5 * torch.randn(16, generator=g)
    train = _low_rank_gaussian(32, 0.0, g, basis, mu)
    normal = _low_rank_gaussian(8, 0.0, g, basis, mu)
    shifted = _low_rank_gaussian(8, 0.2, g, basis, mu)
    net = fit(train, SimpleNetConfig(hidden=256), TrainBudget(steps=200, patches_per_step=512, seed=0))
    s_n, s_a = net.score(normal).flatten(), net.score(shifted).flatten()
    y = torch.cat([torch.zeros_like(s_n), torch.ones_like(s_a)])
    assert roc_auc_score(y.numpy(), torch.cat([s_n, s_a]).numpy()) > 0.9


def test_noise_sigma_by_hand() -> None:
    patches = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1, mean 3
    assert noise_sigma(patches, SimpleNetConfig()) == 0.015
    assert noise_sigma(patches, SimpleNetConfig(noise_scale="patch_norm")) == pytest.approx(0.045)
    assert noise_sigma(patches, SimpleNetConfig(noise_std=0.1, noise_scale="patch_norm")) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="noise_scale"):
        noise_sigma(patches, SimpleNetConfig(noise_scale="relative"))


def test_training_counts_steps_and_records_loss() -> None:
    g = torch.Generator().manual_seed(0)
    feats = 10 * torch.randn(3, 6, 4, 4, generator=g)  # 48 patches
    cfg = SimpleNetConfig(hidden=16, noise_scale="patch_norm")
    net = fit(feats, cfg, TrainBudget(steps=7, patches_per_step=20, seed=0))  # reshuffles after 2 steps
    assert net.loss_history.shape == (7,) and torch.isfinite(net.loss_history).all()
    assert net.noise_sigma == pytest.approx(0.015 * float(flatten_patches(feats).norm(dim=1).mean()), rel=1e-5)
    assert not net.training
    big = fit(feats, cfg, TrainBudget(steps=3, patches_per_step=10_000, seed=0))  # capped at all 48 patches
    assert big.loss_history.shape == (3,)
    with pytest.raises(ValueError, match="need steps >= 1 and patches_per_step >= 2"):
        fit(feats, cfg, TrainBudget(steps=0))
    with pytest.raises(ValueError, match="need steps >= 1 and patches_per_step >= 2"):
        fit(feats, cfg, TrainBudget(steps=1, patches_per_step=1))
    with pytest.raises(ValueError, match=r"feats must be \[N, C, h, w\]"):
        fit(feats[0], cfg, TrainBudget(steps=1))
    # the smallest legal run: one step of 2 patches (BatchNorm needs 2), or 2 patches in all
    assert fit(feats, cfg, TrainBudget(steps=1, patches_per_step=2)).loss_history.shape == (1,)
    assert fit(feats[:2, :, :1, :1], cfg, TrainBudget(steps=1)).loss_history.shape == (1,)
    with pytest.raises(ValueError, match="SimpleNet needs at least 2 training patches"):
        fit(feats[:1, :, :1, :1], cfg, TrainBudget(steps=1))


def test_patch_norm_scale_is_the_identity_on_unit_norm_features() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 6, 3, 3, generator=g)
    feats = feats / feats.norm(dim=1, keepdim=True)  # every patch has norm 1: "patch_norm" = "absolute"
    budget = TrainBudget(steps=5, patches_per_step=16, seed=2)
    a = fit(feats, SimpleNetConfig(hidden=16), budget)
    b = fit(feats, SimpleNetConfig(hidden=16, noise_scale="patch_norm"), budget)
    torch.testing.assert_close(a.score(feats), b.score(feats))


def test_first_step_moves_every_weight_by_its_learning_rate() -> None:
    # Adam's first update is lr * m / (sqrt(v) + eps) with m = g, v = g^2: lr * sign(g) for every
    # entry with a real gradient. So one step moves the adaptor's weights by lr_adaptor (AdamW) and
    # the discriminator's by lr_discriminator (Adam), measured from the seed's initial weights.
    # (Biases in front of BatchNorm get no gradient: BatchNorm removes a common shift.)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 6, 4, 4, generator=g)
    cfg = SimpleNetConfig(hidden=16, lr_adaptor=1e-4, lr_discriminator=3e-4)
    net = fit(feats, cfg, TrainBudget(steps=1, patches_per_step=32, seed=3))
    init = SimpleNet(6, cfg)
    init.reset_parameters(torch.Generator().manual_seed(3))  # what fit starts from
    before = dict(init.named_parameters())
    expect = {
        "adaptor.weight": cfg.lr_adaptor,
        "discriminator.body.0.weight": cfg.lr_discriminator,
        "discriminator.body.1.weight": cfg.lr_discriminator,  # BatchNorm scale
        "discriminator.body.1.bias": cfg.lr_discriminator,  # BatchNorm shift
        "discriminator.tail.weight": cfg.lr_discriminator,
    }
    for name, p in net.named_parameters():
        if name in expect:
            step = (p.detach() - before[name].detach()).abs()
            assert step.median().item() == pytest.approx(expect[name], rel=0.02), name


def test_fakes_are_adapted_features_plus_isotropic_noise() -> None:
    # The generator adds N(0, sigma^2 I) *after* the adaptor: q- - q has covariance sigma^2 I.
    # Noise added before the adaptor would come out as G's weight times the noise,
    # with covariance sigma^2 W W^T (the same linear map, not the identity).
    from torch.nn.modules.module import register_module_forward_pre_hook

    from adlib.methods.simplenet import Discriminator

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 8, 8, 8, generator=g)  # 4096 patches
    seen: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, Discriminator) and module.training and not seen:
            seen.append(args[0].detach().clone())  # the first step's [q; q-]

    handle = register_module_forward_pre_hook(record)
    try:
        net = fit(feats, SimpleNetConfig(hidden=16, noise_std=0.5), TrainBudget(steps=1, patches_per_step=4096))
    finally:
        handle.remove()
    q, q_fake = seen[0].chunk(2)  # [B, C], [B, C]
    diff = (q_fake - q) / net.noise_sigma  # [B, C], should be N(0, I)
    cov = diff.T @ diff / len(diff)  # [C, C]
    assert (cov - torch.eye(8)).abs().max().item() < 0.15  # sampling error about 0.02 per entry
    assert diff.mean(dim=0).abs().max().item() < 0.1


def test_discriminator_lr_follows_a_cosine_to_0_4_lr() -> None:
    # CosineAnnealingLR per step: lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2, lr_min = 0.4 lr;
    # the adaptor's AdamW keeps a constant lr.
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    lrs: dict[str, list[float]] = {"Adam": [], "AdamW": []}
    decay: dict[str, float] = {}

    def record(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        lrs[type(opt).__name__].append(opt.param_groups[0]["lr"])
        decay[type(opt).__name__] = opt.param_groups[0]["weight_decay"]

    handle = register_optimizer_step_pre_hook(record)
    try:
        fit(torch.randn(2, 4, 3, 3), SimpleNetConfig(hidden=8), TrainBudget(steps=6, patches_per_step=8))
    finally:
        handle.remove()
    lr, lr_min, t_max = 2e-4, 0.4 * 2e-4, 6
    expect = [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for t in range(t_max)]
    assert lrs["Adam"] == pytest.approx(expect, rel=1e-6)
    assert lrs["AdamW"] == pytest.approx([1e-4] * t_max, rel=1e-9)
    assert decay["Adam"] == 1e-5  # the discriminator's weight decay (SimpleNetConfig.weight_decay_discriminator)


def test_fit_builds_the_configured_model_on_transformed_float32_features() -> None:
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(4, 6, 3, 3, generator=g)
    cfg = SimpleNetConfig(hidden=24, leaky_slope=0.1)
    budget = TrainBudget(steps=3, patches_per_step=16, seed=1)
    net = fit(feats, cfg, budget, features_transform=lambda x: 2 * x + 1)
    assert net.cfg is cfg and net.discriminator.body[0].out_features == 24
    assert net.discriminator.body[2].negative_slope == 0.1  # the configured slope, not the default
    # training sees the transformed features, and score applies the same hook
    ref = fit(2 * feats + 1, cfg, budget)
    torch.testing.assert_close(net.score(feats), ref.score(2 * feats + 1))
    # float64 features train the same float32 model
    torch.testing.assert_close(fit(feats.double(), cfg, budget).score(feats), fit(feats, cfg, budget).score(feats))


def test_recorded_loss_is_the_truncated_l1_with_the_configured_margin() -> None:
    # loss_history[0] = mean(relu(th - D(q))) + mean(relu(th + D(q-))) of the first step's outputs, th = margin
    from torch.nn.modules.module import register_module_forward_hook

    from adlib.methods.simplenet import Discriminator

    outputs: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, Discriminator) and module.training:
            outputs.append(out.detach().clone())  # [2B]: D(q) then D(q-)

    handle = register_module_forward_hook(record)
    try:
        g = torch.Generator().manual_seed(3)
        net = fit(torch.randn(2, 4, 4, 4, generator=g), SimpleNetConfig(hidden=8, margin=0.8), TrainBudget(steps=2))
    finally:
        handle.remove()
    d_true, d_fake = outputs[0].chunk(2)  # 32 patches each
    expect = torch.relu(0.8 - d_true).mean() + torch.relu(0.8 + d_fake).mean()
    assert net.loss_history[0].item() == pytest.approx(expect.item(), rel=1e-6)
