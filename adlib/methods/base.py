"""The method contract, and the training glue that every learned method shares.

Every method in `adlib.methods` has

* a config dataclass whose defaults are the paper's (``PatchCoreConfig``, ``SimpleNetConfig``,
  ``AdaptedMoEConfig``, ...), each default with a comment naming its source;
* ``fit(train_feats, cfg, budget, ...) -> model`` on normal training features ``[N, C, h, w]``;
* a model whose ``score(feats [N, C, h, w]) -> [N, h, w]`` gives patch anomaly scores (higher =
  more anomalous), which `adlib.maps` turns into maps and image scores.

How long and where to train travels as one :class:`TrainBudget`, built from the run profile
(``adlib.config.Profile.budget``), never as loose arguments. ``adlib.evaluate.run_method`` is the one
path from a category to maps, scores, metrics and timings for any method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class TrainBudget:
    """How much training a run affords, where, and from which seed.

    Learned methods count optimizer steps, not epochs, so the amount of training does not depend on
    the data set's size or the resolution (``adlib.methods.simplenet``).
    """

    steps: int = 200  # optimizer steps per trained network (a SimpleNet, an expert)
    patches_per_step: int = 1024  # patch features per step
    router_steps: int = 100  # optimizer steps of a routing network
    router_batch: int = 16  # images per routing step
    device: str | torch.device = "cpu"
    seed: int = 0  # the one seed of a run; sub-models derive theirs from it (documented where)
    progress: bool = False  # tqdm bars

    def with_seed(self, seed: int) -> TrainBudget:
        return dataclasses.replace(self, seed=seed)


LOSS_CHECK_EVERY = 25  # optimizer steps between checks of the loss history (one device sync each)


def check_loss(history: Tensor, step: int, model: str, hint: str) -> None:
    """Stop training whose loss turned NaN or infinite; called every step, checks every few.

    ``history: [steps]`` holds one loss per step on the training device, written without a sync.
    Every ``LOSS_CHECK_EVERY`` steps and at the last step, ``history[: step + 1]`` is checked on the
    device (one sync); a non-finite value raises a one-line ``FloatingPointError`` naming ``model``,
    the first bad step (1-based) and ``hint`` (what to change: learning rate, inputs).
    """
    steps = len(history)
    if (step + 1) % LOSS_CHECK_EVERY and step + 1 != steps:
        return
    seen = history[: step + 1]  # [step + 1]
    bad = ~torch.isfinite(seen)  # [step + 1]
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0, 0])
    raise FloatingPointError(f"{model}: training loss is {float(seen[first])} at step {first + 1} of {steps}; {hint}")


class PatchScorer(Protocol):
    """What `fit` returns: a model that scores patch features."""

    def score(self, feats: Tensor) -> Tensor:  # [N, C, h, w] -> [N, h, w]
        ...


def flatten_patches(feats: Tensor) -> Tensor:
    """``[N, C, h, w] -> [N*h*w, C]``: one row per patch (order: image, row, column)."""
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


class StepSampler:
    """Minibatches of ``batch`` indices of ``range(n)``, without replacement until all are used, then reshuffled.

    The first permutation is drawn from ``generator`` when the sampler is made, the next ones when
    the previous is used up; a final incomplete batch is dropped.
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator) -> None:
        if n < 1 or batch < 1:
            raise ValueError(f"StepSampler needs n >= 1 and batch >= 1, got n={n}, batch={batch}")
        self.n, self.batch, self.generator = n, min(batch, n), generator
        self.order, self.pos = torch.randperm(n, generator=generator), 0  # [n]

    def __call__(self) -> Tensor:
        if self.pos + self.batch > self.n:  # used up: a new shuffle
            self.order, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.order[self.pos : self.pos + self.batch]  # [batch]
        self.pos += self.batch
        return idx
