"""Multi-layer patch features from a frozen CNN, and an on-disk cache of them.

PatchCore (Roth et al., CVPR 2022, section 3.1) and SimpleNet (Liu et al., CVPR 2023, section 3.1)
describe a patch by the mid-level feature maps of an ImageNet CNN:

1. take the maps of a few stages (stride 8 and 16 here),
2. aggregate each position's local neighbourhood (a 3x3 average: a patch "sees" its neighbours),
3. upsample the coarser maps to the finest one and concatenate along channels.

Every method in this repository starts from these features, so they are computed once per
(data set, split, backbone, layers, resolution) and read back from the cache afterwards: an
ablation never runs the backbone again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .backbones import DEFAULT_BACKBONE, load_backbone
from .data import ADSplit
from .runtime import progress_bar, resolve_device, save_atomic


@dataclass(frozen=True)
class FeatureConfig:
    """How patch features are made; part of the cache key."""

    backbone: str = DEFAULT_BACKBONE
    layers: tuple[int, ...] | None = None  # None: the backbone's default (BACKBONES[name].default_layers)
    patch_size: int = 3  # local neighbourhood aggregation (PatchCore: 3)
    # How the 3x3 average treats the map's border (notebook 01, "The border question"): "exclude" the
    # padding from the mean, count "zeros" (anomalib's PatchCore), or "reflect" the map into the padding.
    # "zeros": the option chosen by the border rule (adlib.border) on held-out normal training images at the
    # full profile (results/tables/01_border_criterion_full.md), for PatchCore and for SimpleNet alike.
    padding: str = "zeros"
    weights: str | None = None  # optional weights file for the papers' backbones


PADDINGS = ("exclude", "zeros", "reflect")


def to_input(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> normalised float [N, 3, S, S]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, S, S]
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def local_mean(fmap: torch.Tensor, patch_size: int = 3, padding: str = "zeros") -> torch.Tensor:
    """Mean over each position's `patch_size` x `patch_size` neighbourhood: [B, C, h, w] -> [B, C, h, w].

    At the border the window sticks out of the map; `padding` says what it averages there: "exclude"
    (only the positions inside), "zeros" (zeros count, so border means shrink towards 0) or
    "reflect" (the map mirrored at its edge).
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    r = patch_size // 2
    if padding == "reflect":
        return F.avg_pool2d(F.pad(fmap, (r, r, r, r), mode="reflect"), patch_size, stride=1)
    return F.avg_pool2d(fmap, patch_size, stride=1, padding=r, count_include_pad=padding == "zeros")


def aggregate(maps: list[torch.Tensor], patch_size: int = 3, padding: str = "zeros") -> torch.Tensor:
    """Local averaging of each map (:func:`local_mean`), upsampling to the first map's size, concatenation.

    maps: list of [B, C_l, h_l, w_l] (finest first) -> [B, sum_l C_l, h_0, w_0]
    """
    h, w = maps[0].shape[-2:]
    out = []
    for fmap in maps:
        if patch_size > 1:
            fmap = local_mean(fmap, patch_size, padding)
        if fmap.shape[-2:] != (h, w):
            fmap = F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)
        out.append(fmap)
    return torch.cat(out, dim=1)  # [B, C, h, w]


class FeatureExtractor:
    """Frozen backbone + :func:`aggregate`, batched on a device."""

    def __init__(
        self,
        config: FeatureConfig = FeatureConfig(),
        device: str | torch.device = "auto",
        pretrained: bool = True,
        batch_size: int = 32,
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.pretrained = pretrained
        self.model: nn.Module = load_backbone(config.backbone, pretrained, config.layers, config.weights)
        # channels_last: about 1.7x faster convolutions on CPU (oneDNN) and on tensor cores.
        self.model.to(self.device, memory_format=torch.channels_last)
        self.spec = self.model.spec  # type: ignore[attr-defined]

    @property
    def layers(self) -> tuple[int, ...]:
        return self.model.layers  # type: ignore[attr-defined]

    @torch.no_grad()  # not inference_mode: callers may train on the returned features
    def pyramid(self, images: np.ndarray, progress: bool = False) -> list[torch.Tensor]:
        """uint8 [N, S, S, 3] -> the backbone's stage maps, float32 [N, C_l, h_l, w_l] on the CPU (finest first)."""
        chunks: list[list[torch.Tensor]] = []
        starts = range(0, len(images), self.batch_size)
        for i in progress_bar(starts, desc=f"features ({self.config.backbone})", disable=not progress, leave=False):
            x = to_input(images[i : i + self.batch_size], self.spec.mean, self.spec.std)
            x = x.to(self.device, memory_format=torch.channels_last)  # [B, 3, S, S]
            chunks.append([m.float().cpu().contiguous() for m in self.model(x)])  # list of [B, C_l, h_l, w_l]
        return [torch.cat(stage) for stage in zip(*chunks, strict=True)]

    def aggregate(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Stage maps -> patch features [N, C, h, w] with this extractor's patch size and padding."""
        return aggregate(pyramid, self.config.patch_size, self.config.padding)

    def __call__(self, images: np.ndarray, progress: bool = False) -> torch.Tensor:
        """uint8 [N, S, S, 3] -> float32 [N, C, S/8, S/8] on the CPU."""
        return self.aggregate(self.pyramid(images, progress))

    def cache_key(self, split: ADSplit, dataset_key: str, split_name: str) -> dict[str, object]:
        """What the stage maps of `split` depend on; patch size and padding are applied on reading."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("layers", "patch_size", "padding")}
        return {
            "dataset": dataset_key,
            "split": split_name,
            "n_images": len(split),
            "image_size": split.image_size,
            "content": split.fingerprint(),
            "pretrained": self.pretrained,
            **config,
            "layers": list(self.layers),
        }


CACHE_FORMAT = 3  # entries hold the stage maps, the key, their shapes and this number; others are recomputed
STALE_TMP_S = 600  # a temporary cache file this old is a leftover even if its pid is alive (reused pids)
_swept: set[Path] = set()  # cache folders already cleaned of leftovers by this process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_tmp(cache_dir: Path) -> list[Path]:
    """Delete `*.tmp<pid>` files left by killed writers (pid gone, or older than STALE_TMP_S); returns them."""
    removed = []
    for tmp in cache_dir.glob("*.tmp*"):
        pid = tmp.suffix[len(".tmp") :]
        try:
            old = time.time() - tmp.stat().st_mtime > STALE_TMP_S
            if not pid.isdigit() or old or not _pid_alive(int(pid)):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
    return removed


def _check_entry(entry: object, key: dict[str, object], expected: list[list[int]]) -> str | None:
    """Why a loaded cache entry cannot be used, or None if it can. `expected`: the stage maps' shapes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pyramid"), list):
        return "not a feature-cache entry of this version (stage maps)"
    if entry.get("format") != CACHE_FORMAT:
        return f"written in format {entry.get('format')}, this version reads {CACHE_FORMAT}"
    try:
        stored_key = json.loads(entry.get("key", ""))
    except (TypeError, ValueError):
        return "its key is unreadable"
    if stored_key != json.loads(json.dumps(key)):
        return "its key differs from the one its file name stands for (a copied or renamed file?)"
    maps = entry["pyramid"]
    if not all(isinstance(m, torch.Tensor) for m in maps):
        return "its stage maps are not tensors"
    shapes = [list(m.shape) for m in maps]
    if "shapes" in entry and shapes != entry["shapes"]:
        return f"stage maps of shapes {shapes} but the entry says {entry['shapes']}"
    if shapes != expected:
        return f"stage maps of shapes {shapes}, expected {expected}"
    if any(m.dtype != torch.float32 for m in maps):
        return f"stage maps of dtype {[str(m.dtype) for m in maps]}, expected torch.float32"
    return None


def _expected_shapes(extractor: FeatureExtractor, split: ADSplit) -> list[list[int]]:
    """The stage maps' shapes for `split`: [N, C_l, ceil(S / stride_l), same] per stage."""
    info = extractor.model.feature_info  # type: ignore[attr-defined]
    size = split.image_size
    pairs = zip(info.channels(), info.reduction(), strict=True)
    return [[len(split), c, -(-size // r), -(-size // r)] for c, r in pairs]


def cached_pyramid(
    extractor: FeatureExtractor,
    split: ADSplit,
    dataset_key: str,
    split_name: str,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[torch.Tensor]:
    """The backbone's stage maps of `split` (finest first), computed once and then read from `cache_dir`.

    The file name is a hash of the data set, the split, the image content, the backbone, its layers
    and the resolution, so a change of any of them computes anew. Each entry also holds the key itself
    and the maps' shapes, checked on reading: an unreadable, truncated, foreign or wrong-shape entry is
    reported (a warning naming the file and why) and recomputed. Files are written to a temporary name
    `<entry>.tmp<pid>` and renamed, so an interrupted run never leaves a half-written entry; temporary
    files of killed runs are removed the first time a process uses the folder. The stage maps are
    smaller than the aggregated features (stage 3 is kept at its own resolution) and serve every
    patch size and padding (:func:`cached_features`) and DVAD's multi-scale decoder alike.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else runtime.cache_dir("features")
    if cache_dir not in _swept and cache_dir.is_dir():
        remove_stale_tmp(cache_dir)
        _swept.add(cache_dir)
    key = extractor.cache_key(split, dataset_key, split_name)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    safe = dataset_key.replace("/", "__")
    path = cache_dir / f"{safe}__{split_name}__{digest}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            why = _check_entry(entry, key, _expected_shapes(extractor, split))
        except Exception as err:  # noqa: BLE001 - a corrupt zip, a truncated pickle, EOF: all mean "recompute"
            first = str(err).strip().split("\n")[0].split(". ")[0][:120]  # torch's advice follows the 1st sentence
            why = f"unreadable ({type(err).__name__}{': ' + first if first else ''})"
        if why is None:
            return entry["pyramid"]
        warnings.warn(f"{path}: bad feature-cache entry, {why}; recomputing it", stacklevel=2)
    maps = extractor.pyramid(split.images, progress=progress)  # list of [N, C_l, h_l, w_l]
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = {"pyramid": maps, "key": json.dumps(key), "shapes": [list(m.shape) for m in maps], "format": CACHE_FORMAT}
    save_atomic(entry, path)
    return maps


def cached_features(
    extractor: FeatureExtractor,
    split: ADSplit,
    dataset_key: str,
    split_name: str,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Patch features [N, C, h, w] of `split`: the cached stage maps (:func:`cached_pyramid`), aggregated
    with the extractor's patch size and padding on reading (milliseconds, so every variant is cheap)."""
    return extractor.aggregate(cached_pyramid(extractor, split, dataset_key, split_name, cache_dir, progress))


def image_embeddings(feats: torch.Tensor) -> torch.Tensor:
    """Global average of patch features: [N, C, h, w] -> [N, C] (for plots of images)."""
    return feats.mean(dim=(2, 3))
