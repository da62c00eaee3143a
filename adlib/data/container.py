"""Anomaly-detection data: one in-memory container for every source.

Every loader and generator returns an :class:`ADCategory`: a train split of normal images and a
test split of normal and anomalous images, all resized to one square size, with pixel masks where
the source has them. Methods and metrics only ever see this container, so a notebook that runs on
the built-in data runs unchanged on MVTec AD, VisA, MVTec LOCO, Texture-AD or `../shared/data`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ADSplit:
    """One split of one category. N images of S x S pixels."""

    images: np.ndarray  # [N, S, S, 3] uint8, RGB
    labels: np.ndarray  # [N] int64: 0 normal, 1 anomalous
    masks: np.ndarray | None  # [N, S, S] bool; None when the source has no pixel ground truth
    defect_types: list[str]  # [N] "good" for normal images
    names: list[str]  # [N] source file path, or a generated id
    subclasses: np.ndarray | None = None  # [N] int64 index into ADCategory.subclass_names

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, S, S, 3], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if self.masks is not None and self.masks.shape != self.images.shape[:3]:
            raise ValueError(f"masks must have shape {self.images.shape[:3]}, got {self.masks.shape}")
        if len(self.defect_types) != n or len(self.names) != n:
            raise ValueError("defect_types and names need one entry per image")
        if self.subclasses is not None and self.subclasses.shape != (n,):
            raise ValueError(f"subclasses must have shape ({n},), got {self.subclasses.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def subset(self, index: np.ndarray | list[int]) -> ADSplit:
        """The images at `index` (same order), as a new split."""
        index = np.asarray(index, dtype=np.int64)
        return ADSplit(
            images=self.images[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            defect_types=[self.defect_types[i] for i in index],
            names=[self.names[i] for i in index],
            subclasses=None if self.subclasses is None else self.subclasses[index],
        )

    def fingerprint(self) -> str:
        """A short content hash of the images: feature caches are keyed by it."""
        h = hashlib.sha1()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).data)
        return h.hexdigest()[:16]


def concat_splits(splits: list[ADSplit]) -> ADSplit:
    """Stack splits of one image size into one (masks kept only if every split has them)."""
    if not splits:
        raise ValueError("concat_splits needs at least one split")
    with_masks = all(s.masks is not None for s in splits)
    with_sub = all(s.subclasses is not None for s in splits)
    return ADSplit(
        images=np.concatenate([s.images for s in splits]),  # [N, S, S, 3]
        labels=np.concatenate([s.labels for s in splits]),
        masks=np.concatenate([s.masks for s in splits]) if with_masks else None,
        defect_types=[d for s in splits for d in s.defect_types],
        names=[n for s in splits for n in s.names],
        subclasses=np.concatenate([s.subclasses for s in splits]) if with_sub else None,
    )


@dataclass
class ADCategory:
    """A category (MVTec's 'class'): normal training images and a labelled test split."""

    dataset: str  # e.g. "builtin-textures", "kolektorsdd", "mvtec_ad"
    category: str  # e.g. "brick", "commutator"
    train: ADSplit
    test: ADSplit
    source: str  # the folder it was read from, or how it was generated
    subclass_names: list[str] | None = None  # Texture-AD style subclasses, index = ADSplit.subclasses
    unseen_subclasses: list[str] = field(default_factory=list)  # subclasses absent from train
    held_out: bool = False  # never used to choose a method, hyper-parameter or epoch

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.category}"

    @property
    def image_size(self) -> int:
        return self.train.image_size

    def summary(self) -> dict[str, object]:
        """One row for an overview table."""
        return {
            "dataset": self.dataset,
            "category": self.category,
            "train": len(self.train),
            "test good": int((self.test.labels == 0).sum()),
            "test anomalous": int((self.test.labels == 1).sum()),
            "defect types": ", ".join(sorted({d for d in self.test.defect_types if d != "good"})),
            "masks": self.test.has_masks,
            "size": self.image_size,
            "held out": self.held_out,
        }
