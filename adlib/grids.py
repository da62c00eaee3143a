"""Each notebook's grid of trained models, declared once: the notebook trains from it, ``python -m adlib train``
fills the model cache from it, in shards.

Notebooks 06-08 train dozens of models (07: the default DVAD, one per backbone, Tables 4-5's switches, each over
the profile's seeds; 08: AnomalyMoE with and without EIR / ESB, each level alone, and notebook 07's default DVAD).
Their training sets, configurations and step counts live here, so that a model trained by ``python -m adlib train
--notebook 07 --shard 0/2`` is the model the notebook then loads (the same model cache key,
``adlib.evaluate.model_key``). Notebook 06 takes them from here; 07 and 08 still write theirs out until they are
re-run (their committed executed copies must match their sources), and ``tests/cli/test_train.py`` checks that
those lines equal these. Notebooks 00-05 train their models inside the notebook
(SimpleNets, Adapted-MoE experts and routers: minutes on a CPU) and declare no grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .cache import digest, entry_path
from .config import Profile
from .data import ADCategory, load_shared
from .data.synthetic import make_builtin
from .evaluate import feature_key, model_key
from .features import FeatureConfig, FeatureExtractor, cached_features, cached_pyramid
from .methods import METHODS
from .methods.anomaly_moe import LEVELS, AnomalyMoEConfig
from .methods.base import TrainBudget
from .methods.dvad import PROFILE_STEPS, DVADConfig
from .paper_numbers import dvad as dvad_paper

if TYPE_CHECKING:
    from .nb import Run

GRID_NOTEBOOKS = ("06", "07", "08")
DVAD_DEFAULT = DVADConfig()
AMOE_DEFAULT = AnomalyMoEConfig()  # the authors' settings, ours where stated (adlib.methods.anomaly_moe)
# notebook 07's Table 3: DVAD on each offline backbone (the paper's ResNet-34 where its weights are present)
DVAD_BACKBONES = {
    "efficientnet_lite0": "EfficientNet-Lite0 (ours)",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34 (paper)",
    "wide_resnet50_2": "WideResNet-50",
}


# ----------------------------------------------------------------------------- what each notebook trains


def dvad_steps(profile: Profile) -> int:
    """Optimizer steps of one DVAD training in notebooks 06-08."""
    return PROFILE_STEPS[profile.name]


def dvad_ablations(default: DVADConfig = DVAD_DEFAULT) -> dict[tuple[str, str], DVADConfig]:
    """Notebook 07's Tables 4-5: ``(table, row) -> config``; the subsets of the GLD branches, then M experts."""
    out = {}
    for f in dvad_paper.TABLE4_SUBSETS:  # the paper's order; all three last
        out[("Table 4", dvad_paper.subset_name(*f))] = replace(default, use_mamba=f[0], use_cnn=f[1], use_hyper=f[2])
    for m in (1, 2, 4, 5, 8):
        out[("Table 5", f"M = {m}")] = replace(default, experts=m)
    return out


def amoe_steps(profile: Profile) -> int:
    """AdamW steps of one AnomalyMoE training in notebook 08."""
    return {"ci": profile.train_steps, "full": profile.train_steps // 3}[profile.name]


def amoe_variants(default: AnomalyMoEConfig = AMOE_DEFAULT) -> dict[str, AnomalyMoEConfig]:
    """Notebook 08's regulariser switches, over every seed."""
    return {
        "EIR + ESB (paper)": default,
        "EIR off": replace(default, eir_weight=0.0),
        "ESB off": replace(default, esb_weight=0.0),
        "EIR and ESB off": replace(default, eir_weight=0.0, esb_weight=0.0),
    }


def amoe_single(default: AnomalyMoEConfig = AMOE_DEFAULT) -> dict[str, AnomalyMoEConfig]:
    """Notebook 08's levels trained alone (on the first seed, full profile only)."""
    return {f"{lvl} only (trained alone)": replace(default, levels=(lvl,)) for lvl in LEVELS}


def amoe_single_seeds(profile: Profile, seeds: Sequence[int]) -> list[int]:
    return list(seeds[:1]) if profile.name == "full" else []


@dataclass(frozen=True)
class Job:
    """One model a notebook needs: method, configuration, seed, training set and steps."""

    notebook: str
    label: str  # the notebook's name for it: "default", "Table 5: M = 8", "backbone resnet34", "EIR off"
    method: str  # a key of adlib.methods.METHODS
    cfg: object
    seed: int
    data: str  # "dvad:<backbone>" (encoder maps of stages 1-3) or "features" (stages 2+3, aggregated)
    steps: int

    @property
    def name(self) -> str:
        return f"{self.notebook} {self.label} (seed {self.seed})"


def jobs(notebook: str, profile: Profile, seed: int = 0) -> list[Job]:
    """Every model notebook ``notebook`` trains at ``profile`` with run seed ``seed`` (seeds seed, seed + 1, ...)."""
    if notebook not in GRID_NOTEBOOKS:
        raise ValueError(
            f"notebook {notebook!r} declares no grid of models (those with one: {', '.join(GRID_NOTEBOOKS)}; "
            "notebooks 00-05 train their models inside the notebook, in minutes)"
        )
    seeds = [seed + i for i in range(profile.seeds)]
    dv = dvad_steps(profile)
    dvad_label = "DVAD, notebook 07's default" if notebook == "08" else "default"  # one model: the same cache entry
    out = [Job(notebook, dvad_label, "dvad", DVAD_DEFAULT, s, "dvad:efficientnet_lite0", dv) for s in seeds]
    if notebook == "07":
        out += [
            Job(notebook, f"backbone {b}", "dvad", DVAD_DEFAULT, s, f"dvad:{b}", dv)
            for b in DVAD_BACKBONES
            if b != "efficientnet_lite0"
            for s in seeds
        ]
        out += [
            Job(notebook, f"{tab}: {row}", "dvad", cfg, s, "dvad:efficientnet_lite0", dv)
            for (tab, row), cfg in dvad_ablations().items()
            if cfg != DVAD_DEFAULT
            for s in seeds
        ]
    if notebook == "08":
        am = amoe_steps(profile)
        out += [Job(notebook, label, "anomaly_moe", cfg, s, "features", am) for s in seeds for label, cfg in
                amoe_variants().items()]  # fmt: skip
        out += [
            Job(notebook, label, "anomaly_moe", cfg, s, "features", am)
            for s in amoe_single_seeds(profile, seeds)
            for label, cfg in amoe_single().items()
        ]
    return out


DEFAULT_JOBS = {"dvad": ("07", "default"), "anomaly_moe": ("08", "EIR + ESB (paper)")}  # method -> (notebook, label)


def shard(items: Sequence[Job], index: int, count: int) -> list[Job]:
    """Jobs ``index, index + count, ...`` (0-based ``index``): ``count`` shards cover every job once."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return list(items[index::count])


# ----------------------------------------------------------------------------- the data they train on


def multiclass_sets(profile: Profile, data_root: str | Path | None, seed: int) -> tuple[list[ADCategory], ...]:
    """``(textures, logical, real)``: the classes of the one model of notebooks 06-08 (held-out set excluded)."""
    textures = make_builtin("textures", profile, seed=seed)
    logical = make_builtin("logical", profile, seed=seed)
    real = (
        load_shared(data_root, profile.image_size, profile.max_real_train, profile.max_real_test, seed=seed)
        if data_root
        else []
    )
    return textures, logical, real


def dvad_encoder(device: torch.device, backbone: str = "efficientnet_lite0") -> FeatureExtractor:
    """The encoder of notebooks 06-08's DVAD: stages 1-3 (strides 4, 8, 16) of ``backbone``."""
    return FeatureExtractor(FeatureConfig(backbone=backbone, layers=(1, 2, 3)), device=device)


def data_key(cats: Sequence[ADCategory], extractor: FeatureExtractor) -> str:
    """What a model of all ``cats`` is trained on: the feature keys of their training splits."""
    return digest([feature_key(c, extractor) for c in cats])


def _extractor(data: str, device: torch.device) -> FeatureExtractor:
    if data.startswith("dvad:"):
        return dvad_encoder(device, data.split(":", 1)[1])
    if data == "features":
        return FeatureExtractor(FeatureConfig(), device=device)
    raise ValueError(f"unknown training set {data!r}: 'dvad:<backbone>' or 'features'")


def training_key(data: str, cats: Sequence[ADCategory], device: torch.device) -> str:
    """The data key of a job's training set (no features extracted); FileNotFoundError where weights are absent."""
    return data_key(cats, _extractor(data, device))


def training_set(data: str, cats: Sequence[ADCategory], device: torch.device, progress: bool = False):  # noqa: ANN201
    """The training features of all ``cats`` for a job's ``data`` (see :class:`Job`), from the feature cache.

    ``"dvad:<backbone>"``: the stage maps of every class concatenated, a list of 3 ``[N, C_l, h_l, w_l]``;
    ``"features"``: the aggregated features ``[N, C, h, w]``.
    """
    ex = _extractor(data, device)
    if data == "features":
        return torch.cat([cached_features(ex, c.train, c.key, "train", progress=progress) for c in cats])
    per = [cached_pyramid(ex, c.train, c.key, "train", progress=progress) for c in cats]
    return [torch.cat([p[level] for p in per]) for level in range(3)]


def job_budget(job: Job, run: Run) -> TrainBudget:
    """The budget a notebook trains ``job`` with: the profile's, at the job's seed and steps."""
    return replace(run.budget(seed=job.seed), steps=job.steps)


def is_cached(job: Job, budget: TrainBudget, key: str) -> bool:
    """Whether the model cache holds ``job`` trained with ``budget`` on the set of data key ``key``."""
    return entry_path("models", model_key(METHODS[job.method], job.cfg, budget, key, {})).is_file()
