"""Run profiles: every size-dependent number of an experiment derives from one of these.

`ci` is tiny and runs every notebook on a 2-core CPU in minutes; `full` is the real experiment
(GPU recommended, a CPU gets there slower). Notebooks take `PROFILE` as a papermill parameter and
call :func:`get_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .methods.base import TrainBudget
from .runtime import resolve_device


@dataclass(frozen=True)
class Profile:
    """Sizes of one run profile."""

    name: str
    image_size: int  # square side in pixels, images and masks are resized to it
    n_train: int  # normal training images per built-in class (or subclass)
    n_test_good: int  # normal test images per built-in class (or subclass)
    n_test_bad: int  # anomalous test images per built-in class (or subclass)
    max_real_train: int | None  # cap on real train images per class (None: all)
    max_real_test: int | None  # cap on real test images per class (None: all)
    coreset_ratio: float  # PatchCore memory-bank fraction kept by the greedy coreset
    # SimpleNet and the Adapted-MoE experts count optimizer steps of a fixed number of patches, so
    # the amount of training does not depend on the data set's size or the resolution (adlib.methods.simplenet).
    train_steps: int = 200  # optimizer steps per SimpleNet / expert
    patches_per_step: int = 256  # patch features per step (the generator adds as many noisy copies)
    router_steps: int = 60  # optimizer steps of the Adapted-MoE routing network
    router_batch: int = 16  # images per routing-network step
    seeds: int = 1  # training seeds per learned model (SEED, SEED + 1, ...); tables give mean and sd

    def budget(self, device: str | torch.device = "auto", seed: int = 0, progress: bool = False) -> TrainBudget:
        """The training budget of this profile on ``device`` (resolved), with ``seed`` and ``progress``."""
        return TrainBudget(
            steps=self.train_steps,
            patches_per_step=self.patches_per_step,
            router_steps=self.router_steps,
            router_batch=self.router_batch,
            device=resolve_device(device),
            seed=seed,
            progress=progress,
        )


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        image_size=128,
        n_train=32,
        n_test_good=12,
        n_test_bad=12,
        max_real_train=48,
        max_real_test=48,
        coreset_ratio=0.1,
        # 200 steps x 256 patches: ~1.25 passes over texture_shift's 41k training patches (one SimpleNet),
        # ~6 over one subclass's 8k (an expert)
        train_steps=200,
        patches_per_step=256,
        router_steps=60,  # 6 passes over the 160 training images
        router_batch=16,
        seeds=1,
    ),
    "full": Profile(
        name="full",
        image_size=256,
        n_train=200,
        n_test_good=50,
        n_test_bad=60,
        max_real_train=None,
        max_real_test=None,
        coreset_ratio=0.01,  # PatchCore's 1 % setting: a 10 % bank takes minutes per class on a CPU
        # 600 steps x 1024 patches: ~0.6 passes over texture_shift's 1M training patches (one SimpleNet),
        # ~3 over one subclass's 205k (an expert); timings: `python -m adlib bench --profile full`
        train_steps=600,
        patches_per_step=1024,
        router_steps=150,  # 15 passes over the 1000 training images of texture_shift's seen subclasses
        router_batch=16,
        seeds=3,  # the papers report means of 3 runs
    ),
}


def get_profile(name: str, **overrides: object) -> Profile:
    """Return the profile called `name` ("ci" or "full"), with optional field overrides."""
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"PROFILE must be one of {sorted(PROFILES)}, got {name!r} ({type(name).__name__})")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]
