"""AnomalyMoE's blocks: ESB (gating), hard-mined cosine loss and CLUB (losses), the experts (autoencoders)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adlib.nn.autoencoders import (
    ComponentAutoencoder,
    GlobalAutoencoder,
    PatchExpert,
    Student,
    component_expert_scores,
    global_expert_outputs,
    patch_expert_outputs,
)
from adlib.nn.gating import (
    Z_LOSSES,
    esb_loss,
    importance_loss,
    load_loss,
    logit_l2_loss,
    router_z_loss,
    topk_mask,
    topk_weights,
)
from adlib.nn.losses import CLUBEstimator, club_log_likelihood, club_upper_bound, hard_mined_cosine_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- ESB


def test_importance_is_one_for_uniform_routing_and_grows_with_imbalance() -> None:
    assert importance_loss(torch.full((3, 4), 0.25)).item() == pytest.approx(1.0)
    assert importance_loss(torch.eye(4)).item() == pytest.approx(1.0)  # each image elsewhere: mean is uniform
    # all on expert 0: P = (1, 0, 0, 0) -> 4 * 1 = 4; half/half on two experts: 4 * (1/4 + 1/4) = 2
    assert importance_loss(torch.tensor([[1.0, 0, 0, 0]] * 2)).item() == pytest.approx(4.0)
    assert importance_loss(torch.tensor([[0.5, 0.5, 0, 0]])).item() == pytest.approx(2.0)


def test_load_loss_by_hand() -> None:
    everyone_on_0 = torch.tensor([[1.0, 0, 0, 0]] * 4)  # k = 1, B = 4, N = 4: load = (1, 0, 0, 0)
    assert load_loss(everyone_on_0, capacity_factor=4.0).item() == 0.0  # capacity 4/4 = 1: not exceeded
    assert load_loss(everyone_on_0, capacity_factor=2.0).item() == pytest.approx(0.5**2)  # capacity 1/2
    assert load_loss(torch.eye(4), capacity_factor=1.0).item() == 0.0  # load 1/4 each = the fair share
    sel = topk_mask(torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 2.0, 3.0, 1.0]]), k=2)
    assert sel.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0]]  # load = (1/2, 1, 1/2, 0), sums to k
    assert load_loss(sel, capacity_factor=2.0).item() == pytest.approx(0.5**2)  # only expert 1 over 1/2


def test_z_losses_by_hand() -> None:
    assert router_z_loss(torch.zeros(2, 4)).item() == pytest.approx(math.log(4) ** 2)
    assert router_z_loss(torch.full((1, 4), -math.log(4))).item() == pytest.approx(0.0, abs=1e-12)
    assert logit_l2_loss(torch.tensor([[1.0, -2.0], [0.0, 3.0]])).item() == pytest.approx((1 + 4 + 0 + 9) / 4)


def test_esb_is_minimal_for_uniform_routing_and_grows_with_imbalance() -> None:
    # the authors' z-loss mean(logits^2): all-zero logits (uniform routing) give 1 + 0 + 0, the minimum
    assert esb_loss(torch.zeros(4, 4), k=1, capacity_factor=4.0, z="logits").item() == pytest.approx(1.0)
    c = 2.0
    balanced = c * torch.eye(4) - math.log(math.exp(c) + 3)  # logsumexp 0, each image prefers another expert
    esb = esb_loss(balanced, k=1, capacity_factor=1.0, z="logsumexp")
    assert esb.item() == pytest.approx(1.0, abs=1e-6)  # importance 1 + load 0 + z 0: the minimum
    skewed = balanced[[0, 0, 0, 1]]  # three images on expert 0, one on expert 1; same logsumexp
    p = torch.softmax(skewed, dim=1).mean(0)
    expected = 4 * (p * p).sum() + (3 / 4 - 1 / 4) ** 2  # importance + load over capacity 1/4; z = 0
    assert esb_loss(skewed, 1, 1.0, "logsumexp").item() == pytest.approx(expected.item(), abs=1e-6)
    assert esb_loss(skewed, 1, 1.0, "logsumexp") > esb
    collapsed = balanced[[0, 0, 0, 0]]
    assert esb_loss(collapsed, 1, 1.0, "logsumexp") > esb_loss(skewed, 1, 1.0, "logsumexp")
    for z, z_loss in Z_LOSSES.items():  # the same imbalance under either z-loss: more than the balanced case
        assert esb_loss(collapsed, 1, 1.0, z) - z_loss(collapsed) > esb_loss(balanced, 1, 1.0, z) - z_loss(balanced)
    with pytest.raises(ValueError, match="z must be"):
        esb_loss(balanced, 1, z="l1")


def test_topk_of_softmax_is_softmax_of_topk_logits() -> None:
    logits = torch.randn(5, 18, generator=torch.Generator().manual_seed(0))
    w = topk_weights(torch.softmax(logits, dim=1), 3)  # [5, 18]
    top = logits.topk(3, dim=1)
    direct = torch.zeros_like(logits).scatter(1, top.indices, torch.softmax(top.values, dim=1))
    torch.testing.assert_close(w, direct)


# ----------------------------------------------------------------------------- hard-mined cosine loss


def test_hard_mined_loss_value_is_the_cosine_distance_and_gradient_is_mined() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 8, 5, 4, generator=g)  # [B, C, h, w]: 40 positions, the hardest 4 keep their gradient
    recon = torch.randn(2, 8, 5, 4, generator=g).requires_grad_()
    mined = hard_mined_cosine_loss(target, recon, p=0.9, factor=0.1)  # [B]
    plain_d = 1 - F.cosine_similarity(target, recon, dim=1)  # [B, h, w]
    torch.testing.assert_close(mined, plain_d.mean(dim=(1, 2)))
    (g_mined,) = torch.autograd.grad(mined.sum(), recon)
    (g_plain,) = torch.autograd.grad(plain_d.mean(dim=(1, 2)).sum(), recon)
    d = plain_d.detach().flatten()
    hard = torch.zeros(40, dtype=torch.bool)
    hard[d.topk(4).indices] = True
    hard = hard.view(2, 1, 5, 4).expand_as(recon)  # [B, C, h, w]
    torch.testing.assert_close(g_mined[hard], g_plain[hard])
    torch.testing.assert_close(g_mined[~hard], 0.1 * g_plain[~hard])
    assert hard_mined_cosine_loss(target, target.clone().requires_grad_()).abs().max() < 1e-6


def test_hard_mined_loss_gives_the_target_no_gradient() -> None:
    target = torch.randn(1, 3, 2, 2, requires_grad=True)
    recon = torch.randn(1, 3, 2, 2, requires_grad=True)
    hard_mined_cosine_loss(target, recon).sum().backward()
    assert target.grad is None and recon.grad is not None


# ----------------------------------------------------------------------------- CLUB


def _trained_club(x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> CLUBEstimator:
    torch.manual_seed(0)
    est = CLUBEstimator(x.shape[1], hidden=16)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = -club_log_likelihood(est, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return est


def test_club_is_near_zero_for_independent_and_large_for_dependent_inputs() -> None:
    """Estimators trained 200 steps on 256 pairs, the bound measured on 256 fresh pairs (on its own
    training pairs an estimator that fitted noise reads above 0 even for independent inputs)."""
    g = torch.Generator().manual_seed(0)
    x, x_new = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g)  # [B, D]
    y_indep, y_indep_new = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g)
    y_dep = x + 0.1 * torch.randn(256, 4, generator=g)
    y_dep_new = x_new + 0.1 * torch.randn(256, 4, generator=g)
    est_indep, est_dep = _trained_club(x, y_indep), _trained_club(x, y_dep)
    with torch.no_grad():
        indep = club_upper_bound(est_indep, x_new, y_indep_new).item()
        dep = club_upper_bound(est_dep, x_new, y_dep_new).item()
    assert abs(indep) < 0.2
    assert dep > 5.0  # ~ D * 2 / (2 e^-1) = 10.9: the tanh keeps the variance above e^-1
    assert dep > 20 * abs(indep)


def test_club_by_hand_with_a_fixed_estimator() -> None:
    est = CLUBEstimator(1, hidden=1)
    for m in est.modules():  # mu(x) = x, logvar = 0
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    est.mu = torch.nn.Identity()
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0], [1.0]])
    # pos: -0.5 (y_i - x_i)^2 = 0; neg pairs: (0-0)^2, (0-1)^2, (1-0)^2, (1-1)^2 -> mean -0.5 * 2/4
    assert club_upper_bound(est, x, y).item() == pytest.approx(0.25)
    assert club_log_likelihood(est, x, y).item() == pytest.approx(0.0)


# ----------------------------------------------------------------------------- experts


@pytest.mark.parametrize("hw", [(4, 4), (16, 16), (5, 7), (1, 1)])
def test_experts_keep_shapes(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, *hw)  # [B, C, h, w]
    assert PatchExpert(6, hidden=4)(x).shape == x.shape
    assert PatchExpert(6, hidden=4, mix=False)(x).shape == x.shape
    ae = GlobalAutoencoder(6, hidden=8, latent=3)
    assert ae(x).shape == x.shape and ae.encoder(x).shape == (2, 3)  # a 3-vector per image: the 1x1 bottleneck
    assert Student(6, hidden=8)(x).shape == x.shape
    assert ComponentAutoencoder(6, (5, 4), 2)(torch.randn(7, 6)).shape == (7, 6)


def test_patch_expert_without_mix_is_per_position() -> None:
    torch.manual_seed(0)
    expert = PatchExpert(6, hidden=4, mix=False).eval()
    x = torch.randn(1, 6, 3, 3)
    y = x.clone()
    y[:, :, 0, 0] += 5.0  # change one position
    diff = (expert(x) - expert(y)).abs().sum(dim=1)[0]  # [h, w]
    assert diff[0, 0] > 0 and diff.flatten()[1:].max() == 0
    mixed = PatchExpert(6, hidden=4, mix=True).eval()
    diff = (mixed(x) - mixed(y)).abs().sum(dim=1)[0]
    assert diff[1, 1] > 0 and diff[2, 2] == 0  # the 3x3 mix reaches the neighbours only


def test_expert_outputs_by_hand() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4)  # [B, C, h, w]
    ae, student = GlobalAutoencoder(6, hidden=8, latent=3).eval(), Student(6, hidden=8).eval()
    loss, amap, pooled = global_expert_outputs(ae, student, x, "mse")
    a, s = ae(x), student(x)
    torch.testing.assert_close(amap, ((a - s) ** 2).mean(dim=1))
    torch.testing.assert_close(loss, ((a - x) ** 2).mean(dim=(1, 2, 3)) + ((s - a) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(pooled, s.mean(dim=(2, 3)))
    both = global_expert_outputs(ae, student, x, "cosine+ae")[1]
    torch.testing.assert_close(both, 2 - F.cosine_similarity(a, s, dim=1) - F.cosine_similarity(a, x, dim=1))
    with pytest.raises(ValueError, match="global_map"):
        global_expert_outputs(ae, student, x, "l2")
    expert = PatchExpert(6, hidden=4).eval()
    loss, amap, pooled = patch_expert_outputs(expert, x)
    torch.testing.assert_close(amap, 1 - F.cosine_similarity(x, expert(x), dim=1))
    torch.testing.assert_close(loss, amap.mean(dim=(1, 2)))
    f = torch.randn(5, 6)
    comp_ae = ComponentAutoencoder(6, (4,), 2).eval()
    torch.testing.assert_close(component_expert_scores(comp_ae, f), 1 - F.cosine_similarity(comp_ae(f), f, dim=1))


def test_patch_expert_dropout_on_the_input_leaves_the_reconstruction_whole() -> None:
    """Issue 23: with dropout_input the dropout sees the expert's input once, never the output that enters the loss."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4)
    for dropout_input in (True, False):
        expert = PatchExpert(6, 3, dropout=0.5, mix=False, dropout_input=dropout_input).train()
        seen, made = [], []
        expert.drop.register_forward_pre_hook(lambda mod, args, seen=seen: seen.append(args[0]))
        expert.drop.register_forward_hook(lambda mod, args, out, made=made: made.append(out))
        y = expert(x)
        if dropout_input:
            assert len(seen) == 1 and torch.equal(seen[0], x)
            torch.testing.assert_close(y, expert.fc2(F.gelu(expert.fc1(made[0]))))  # nothing dropped after the MLP
        else:
            assert len(seen) == 2 and torch.equal(y, made[1])  # the output itself comes out of the dropout
