"""The method contract's shared glue: patch flattening, the step sampler, the training budget."""

from __future__ import annotations

import pytest
import torch

from adlib.config import get_profile
from adlib.methods.base import TrainBudget, flatten_patches
from adlib.training import StepSampler


def test_flatten_patches_order() -> None:
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # [N, C, h, w]
    p = flatten_patches(f)
    assert p.shape == (8, 3)
    assert torch.equal(p[5], f[1, :, 0, 1])  # image 1, row 0, column 1


def test_step_sampler_draws_without_replacement_then_reshuffles() -> None:
    g = torch.Generator().manual_seed(0)
    first = torch.randperm(10, generator=g)
    second = torch.randperm(10, generator=g)
    sampler = StepSampler(10, 4, torch.Generator().manual_seed(0))
    batches = [sampler() for _ in range(4)]
    assert torch.equal(batches[0], first[:4]) and torch.equal(batches[1], first[4:8])  # 2 left: dropped
    assert torch.equal(batches[2], second[:4]) and torch.equal(batches[3], second[4:8])
    assert StepSampler(3, 100, g)().shape == (3,)  # a batch larger than n is all of n
    with pytest.raises(ValueError, match="batch >= 1"):
        StepSampler(5, 0, g)


def test_profile_budget() -> None:
    budget = get_profile("ci").budget("cpu", seed=3)
    assert isinstance(budget, TrainBudget) and budget.seed == 3 and str(budget.device) == "cpu"
    assert (budget.steps, budget.patches_per_step) == (
        get_profile("ci").train_steps,
        get_profile("ci").patches_per_step,
    )
    assert budget.with_seed(5).seed == 5 and budget.with_seed(5).steps == budget.steps
