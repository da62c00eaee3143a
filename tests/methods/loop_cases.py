"""Tiny CPU trainings of every learned method, for the equivalence test of the one training loop.

``python -m tests.methods.loop_cases`` writes ``tests/methods/loop_reference.pt``: for each case the trained
weights (state dict) and loss history. The committed file was written by the per-method loops of commit
abd7b6f (before ``adlib.training`` existed); ``test_training_loop.py`` trains the same cases through today's
code and compares, so that the model caches and the committed results made by the old loops stay valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from adlib.methods import adapted_moe, anomaly_moe, dvad, routing, simplenet
from adlib.methods.base import TrainBudget

from .test_anomaly_moe import TINY as AMOE_TINY  # the tiny AnomalyMoE of its tests
from .test_anomaly_moe import toy_scenes

REFERENCE = Path(__file__).with_name("loop_reference.pt")


def _feats(n: int, c: int = 8, s: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def _pyramid(n: int = 12, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s, generator=g) for c, s in ((4, 16), (6, 8), (8, 4))]


DVAD_TINY = dvad.DVADConfig(dims=(16, 8, 8, 8), directions=2, batch=4, score_batch=5)
SUB = np.array([0, 1, 2] * 4)


def _history(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    h = model.loss_history  # type: ignore[attr-defined]
    return dict(h) if isinstance(h, dict) else {"total": h}


def _b(over: dict, **kw: object) -> TrainBudget:
    return replace(TrainBudget(**kw), **over)  # type: ignore[arg-type]


# name -> train(budget overrides) -> model; the overrides add checkpoints, a held-out split, ... to the case
CASES: dict[str, Callable[[dict], torch.nn.Module]] = {
    "simplenet": lambda o: simplenet.fit(
        _feats(4), simplenet.SimpleNetConfig(hidden=16), _b(o, steps=30, patches_per_step=16, seed=3)
    ),
    "simplenet patch_norm": lambda o: simplenet.fit(
        _feats(4), simplenet.SimpleNetConfig(hidden=16, noise_scale="patch_norm"), _b(o, steps=7, seed=1)
    ),
    **{
        f"router {loss}": (
            lambda o, loss=loss: routing.train_router(
                _feats(12), SUB, routing.RouterConfig(loss=loss), _b(o, router_steps=20, router_batch=4, seed=2)
            )
        )
        for loss in routing.ROUTING_LOSSES
    },
    "adapted_moe": lambda o: adapted_moe.fit(
        _feats(12),
        adapted_moe.AdaptedMoEConfig(expert=simplenet.SimpleNetConfig(hidden=16), top_k=2),
        _b(o, steps=6, patches_per_step=16, router_steps=6, router_batch=4, seed=1),
        subclasses=SUB,
    ),
    "dvad": lambda o: dvad.fit(_pyramid(), DVAD_TINY, _b(o, steps=12, seed=1)),
    "anomaly_moe": lambda o: anomaly_moe.fit(toy_scenes(12), AMOE_TINY, _b(o, steps=12, seed=0)),
    "anomaly_moe authors": lambda o: anomaly_moe.fit(
        toy_scenes(12), replace(AMOE_TINY, router_signal="loss", global_map="mse"), _b(o, steps=8, seed=1)
    ),
}


def run_case(name: str, **over: object) -> dict[str, object]:
    """Train case ``name`` on one thread: ``{"state": state dict, "history": {term: [steps]}}``.

    ``over`` replaces fields of the case's budget (``checkpoint=...``, ``holdout=...``).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = CASES[name](over)
    finally:
        torch.set_num_threads(threads)
    history = _history(model) if hasattr(model, "loss_history") else {}
    if isinstance(model, adapted_moe.AdaptedMoE):  # the experts' and the router's histories
        history = {f"expert {k}": e.loss_history for k, e in enumerate(model.experts)}
        history["router"] = model.router.loss_history  # type: ignore[union-attr]
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "history": history}


if __name__ == "__main__":
    torch.save({name: run_case(name) for name in CASES}, REFERENCE)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes, {len(CASES)} cases)")
