"""Issue 9, case 1: a training loss that turns NaN stops training with one line naming the model and step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adlib import training
from adlib.methods.base import TrainBudget
from adlib.methods.routing import RouterConfig, train_router
from adlib.methods.simplenet import SimpleNetConfig, fit
from adlib.training import check_loss


def test_check_loss_looks_every_few_steps_and_names_the_first_bad_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "LOSS_CHECK_EVERY", 4)
    history = torch.tensor([1.0, 0.5, float("nan"), float("inf"), 0.1, 0.1])
    check_loss(history, 2, "m", "hint")  # step 3 is not a checking step: no sync, no error yet
    with pytest.raises(FloatingPointError, match=r"^m: training loss is nan at step 3 of 6; hint$"):
        check_loss(history, 3, "m", "hint")
    check_loss(torch.ones(6), 5, "m", "hint")  # finite: nothing


def test_simplenet_on_nan_features_stops_with_the_model_step_and_a_hint(one_thread: None) -> None:
    feats = torch.randn(2, 8, 4, 4)
    feats[0, :, 1, 1] = float("nan")
    budget = TrainBudget(steps=3, patches_per_step=32)
    with pytest.raises(FloatingPointError) as info:
        fit(feats, SimpleNetConfig(hidden=16), budget)
    message = str(info.value)
    assert message.startswith("SimpleNet: training loss is nan at step 1 of 3; lower the learning rates")
    assert "lr_adaptor=0.0001" in message and "NaN/inf" in message and "\n" not in message


def test_router_with_an_exploding_learning_rate_stops(one_thread: None) -> None:
    feats = torch.randn(8, 8, 4, 4)
    feats[3] = float("inf")
    budget = TrainBudget(router_steps=2, router_batch=4)
    with pytest.raises(FloatingPointError, match=r"^routing network \(center loss\): training loss is nan at step 1"):
        train_router(feats, np.array([0, 1] * 4), RouterConfig(), budget)
