"""The methods, each in one file, all under one contract (`base`): config, ``fit``, ``model.score``.

`patchcore` and `simplenet` are the baselines; `routing` and `adapted_moe` are Adapted-MoE
(Lei, Chen et al., 2024). Methods import `adlib.nn`, `adlib.features` and `adlib.backbones`, never
`data`, `metrics`, `paper_numbers`, `nb` or `cli` (a test walks the imports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import adapted_moe, anomaly_moe, dvad, patchcore, simplenet
from .base import TrainBudget


@dataclass(frozen=True)
class Method:
    """A method by name: its config class (the paper's defaults) and its ``fit``."""

    name: str
    config: type  # called without arguments: the paper's defaults
    fit: Callable  # fit(train_feats, cfg, budget, **extra) -> model with .score(feats) -> [N, h, w]
    needs_subclasses: bool = False  # fit takes subclasses=[N] labels (None: the method makes its own)
    # For the model cache: the part of a config that determines the trained model, and how to put a
    # trained model under a config's test-time switches (identity for methods without such switches).
    trained_config: Callable[[object], object] = lambda cfg: cfg
    with_test_time: Callable[[object, object], object] = lambda model, cfg: model


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("patchcore", patchcore.PatchCoreConfig, patchcore.fit),
        Method("simplenet", simplenet.SimpleNetConfig, simplenet.fit),
        Method(
            "adapted_moe",
            adapted_moe.AdaptedMoEConfig,
            adapted_moe.fit,
            needs_subclasses=True,
            trained_config=adapted_moe.trained_config,
            with_test_time=adapted_moe.with_test_time,
        ),
        Method("anomaly_moe", anomaly_moe.AnomalyMoEConfig, anomaly_moe.fit),
        Method(
            "dvad", dvad.DVADConfig, dvad.fit, trained_config=dvad.trained_config, with_test_time=dvad.with_test_time
        ),
    )
}

__all__ = ["METHODS", "Method", "TrainBudget"]
