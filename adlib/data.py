"""Anomaly-detection data: one in-memory container for every source.

Every loader and generator returns an :class:`ADCategory`: a train split of normal images and a
test split of normal and anomalous images, all resized to one square size, with pixel masks where
the source has them. Methods and metrics only ever see this container, so a notebook that runs on
the built-in data runs unchanged on MVTec AD, VisA, MVTec LOCO, Texture-AD or `../shared/data`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


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


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

MVTEC_LAYOUT = (
    "<root>/<category>/train/good/*.png, <root>/<category>/test/<type>/*.png and (optional) "
    "<root>/<category>/ground_truth/<type>/<stem>_mask.png"
)


def _open_image(path: Path, mode: str | None) -> Image.Image:
    """Open and fully decode `path`, converted to PIL `mode` (None: as stored); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return im.convert(mode) if mode is not None else im.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _image_hw(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def read_image(path: str | Path, size: int) -> np.ndarray:
    """Read an image file as RGB, resized (bilinear, antialiased) to a square: uint8 [S, S, 3]."""
    im = _open_image(Path(path), "RGB")
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)  # [S, S, 3]


def read_mask(
    path: str | Path,
    size: int,
    expected_hw: tuple[int, int] | None = None,
    image_path: str | Path | None = None,
) -> np.ndarray:
    """Read a defect mask (non-zero = defective) as bool [S, S].

    The binary mask is resized bilinearly as a float image and binarised at 0.5, so a defect thinner
    than about half a pixel of the output size can vanish. `expected_hw` is the (height, width) of
    the mask's image at its original size; a mask of another size is an error that names both files.
    """
    path = Path(path)
    im = _open_image(path, None)  # as stored: palette indices and 16-bit labels stay as they are
    if expected_hw is not None and (im.height, im.width) != tuple(expected_hw):
        of_image = f" of image {image_path}" if image_path is not None else ""
        raise ValueError(
            f"{path}: mask is {im.height}x{im.width} (HxW) but the image{of_image} is {expected_hw[0]}x{expected_hw[1]}"
        )
    values = np.asarray(im)
    if values.ndim == 3:  # an RGB(A) mask: defective where any colour channel is non-zero
        values = values[:, :, :3].max(axis=2)
    binary = (values > 0).astype(np.float32)  # [H, W] in {0, 1}
    resized = Image.fromarray(binary).resize((size, size), Image.BILINEAR)  # float image, mode "F"
    return np.asarray(resized) >= 0.5  # [S, S] bool


def _list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name ([] if the folder does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# From a list of files to an ADCategory
# ---------------------------------------------------------------------------------------------

# What a test image's mask is: "zeros" (normal image), a mask file, several mask files to OR
# (MVTec LOCO), or None (the source has no pixel ground truth at all).
MaskSource = str | Path | list[Path] | None


@dataclass
class _Record:
    """One image file before it is read."""

    path: Path
    label: int  # 0 normal, 1 anomalous
    defect_type: str
    mask: MaskSource = None
    subclass: int = 0


def _stratified_pick(groups: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of k items drawn without replacement, proportionally from every group.

    Every group keeps at least one item when k allows it (so a capped test split still holds both
    normal and anomalous images); the rest is shared by largest remaining deficit.
    """
    n = len(groups)
    if k is None or k >= n:
        return np.arange(n)
    if k <= 0:
        raise ValueError(f"a cap on the number of images must be positive, got {k}")
    ids, counts = np.unique(groups, return_counts=True)
    alloc = np.zeros(len(ids), dtype=np.int64)
    by_size = np.argsort(-counts, kind="stable")
    alloc[by_size[: min(k, len(ids))]] = 1
    target = counts * k / n
    while alloc.sum() < k:  # k <= n, so some group always has room
        deficit = np.where(alloc < counts, target - alloc, -np.inf)
        alloc[int(np.argmax(deficit))] += 1
    picked = [
        rng.choice(np.flatnonzero(groups == g), size=int(a), replace=False) for g, a in zip(ids, alloc, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def _parallel_map(fn, items: list) -> list:
    """`[fn(x) for x in items]` on a few threads (PIL decodes and resizes without the GIL)."""
    if len(items) < 16:
        return [fn(x) for x in items]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _read_mask_source(mask: MaskSource, image_path: Path, size: int) -> np.ndarray:
    """Mask of one test image as bool [S, S]; several files are OR-ed."""
    if isinstance(mask, str) and mask == "zeros":
        return np.zeros((size, size), dtype=bool)
    files = mask if isinstance(mask, list) else [Path(mask)]
    hw = _image_hw(image_path)
    out = np.zeros((size, size), dtype=bool)
    for f in files:
        out |= read_mask(f, size, expected_hw=hw, image_path=image_path)
    return out


def _read_split(records: list[_Record], size: int, with_masks: bool, with_subclasses: bool) -> ADSplit:
    images = _parallel_map(lambda r: read_image(r.path, size), records)
    masks = None
    if with_masks:
        masks = np.stack(_parallel_map(lambda r: _read_mask_source(r.mask, r.path, size), records))
    return ADSplit(
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),  # [N, S, S, 3]
        labels=np.array([r.label for r in records], dtype=np.int64),  # [N]
        masks=masks,  # [N, S, S] or None
        defect_types=[r.defect_type for r in records],
        names=[str(r.path) for r in records],
        subclasses=np.array([r.subclass for r in records], dtype=np.int64) if with_subclasses else None,
    )


def _build_category(
    dataset: str,
    category: str,
    source: Path,
    train: list[_Record],
    test: list[_Record],
    with_masks: bool,
    image_size: int,
    caps: tuple[int | None, int | None],
    seed: int,
    subclass_names: list[str] | None = None,
    unseen_subclasses: list[str] | None = None,
) -> ADCategory:
    """Cap (stratified by subclass and label), read and pack the records."""
    strata_train = np.array([r.subclass for r in train], dtype=np.int64)
    strata_test = np.array([2 * r.subclass + r.label for r in test], dtype=np.int64)
    # Separate streams: changing the train cap does not change which test images are kept.
    max_train, max_test = caps
    train = [train[i] for i in _stratified_pick(strata_train, max_train, np.random.default_rng([seed, 0]))]
    test = [test[i] for i in _stratified_pick(strata_test, max_test, np.random.default_rng([seed, 1]))]
    with_sub = subclass_names is not None
    return ADCategory(
        dataset=dataset,
        category=category,
        train=_read_split(train, image_size, with_masks=False, with_subclasses=with_sub),
        test=_read_split(test, image_size, with_masks=with_masks, with_subclasses=with_sub),
        source=str(source),
        subclass_names=subclass_names,
        unseen_subclasses=list(unseen_subclasses or []),
    )


def _category_dir(root: str | Path, category: str, layout: str) -> Path:
    """`<root>/<category>`, with errors that say what exists instead."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found (expected the layout {layout})")
    folder = root / category
    if not folder.is_dir():
        raise FileNotFoundError(f"category {category!r} not found in {root}; categories there: {_subdirs(root)}")
    return folder


def _mvtec_records(
    folder: Path,
    subclass: int,
    mask_lookup,  # (gt_dir, defect_type, image_path) -> MaskSource
    has_gt: bool,
    test_types: list[str] | None = None,
) -> tuple[list[_Record], list[_Record]]:
    """Train and test records of one MVTec-layout folder (train/good, test/<type>, ground_truth)."""
    train = [_Record(p, 0, "good", subclass=subclass) for p in _list_images(folder / "train" / "good")]
    test: list[_Record] = []
    for defect_type in test_types or _subdirs(folder / "test"):
        for p in _list_images(folder / "test" / defect_type):
            if defect_type == "good":
                test.append(_Record(p, 0, "good", "zeros" if has_gt else None, subclass))
            else:
                mask = mask_lookup(folder / "ground_truth", defect_type, p) if has_gt else None
                test.append(_Record(p, 1, defect_type, mask, subclass))
    return train, test


def _stem_mask(gt_dir: Path, defect_type: str, image_path: Path) -> Path:
    """MVTec AD convention: ground_truth/<type>/<stem>_mask.png."""
    mask = gt_dir / defect_type / f"{image_path.stem}_mask.png"
    if not mask.is_file():
        raise FileNotFoundError(f"{mask}: mask file not found for defective image {image_path}")
    return mask


def _loco_mask(gt_dir: Path, defect_type: str, image_path: Path) -> list[Path] | Path:
    """MVTec LOCO convention: ground_truth/<type>/<stem>/000.png, 001.png, ... (OR-ed).

    Falls back to ground_truth/<type>/<stem>_mask.png where the folder is absent.
    """
    folder = gt_dir / defect_type / image_path.stem
    files = _list_images(folder)
    if files:
        return files
    fallback = gt_dir / defect_type / f"{image_path.stem}_mask.png"
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(f"{folder}: mask folder not found (nor {fallback.name}) for defective image {image_path}")


def _check_nonempty(train: list[_Record], test: list[_Record], folder: Path) -> None:
    if not train:
        raise ValueError(f"{folder / 'train' / 'good'}: no training images (expected {IMAGE_EXTENSIONS} files)")
    if not test:
        raise ValueError(f"{folder / 'test'}: no test images (expected test/<type>/ with image files)")


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def load_mvtec(
    root: str | Path,
    category: str,
    image_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    dataset: str | None = None,
) -> ADCategory:
    """Load one category in the MVTec AD layout (also MPDD, BTAD-like copies and ../shared/data).

    `<root>/<category>/train/good/*`, `<root>/<category>/test/<type>/*` (type "good" is normal)
    and `<root>/<category>/ground_truth/<type>/<stem>_mask.png`. Without a ground_truth folder
    the test masks are None (image-level labels only). Other folders (e.g. validation) are ignored.
    `max_train` / `max_test` keep a seeded random subset (test: stratified by label), in file order.
    """
    folder = _category_dir(root, category, MVTEC_LAYOUT)
    has_gt = (folder / "ground_truth").is_dir()
    train, test = _mvtec_records(folder, 0, _stem_mask, has_gt)
    _check_nonempty(train, test, folder)
    dataset = dataset or Path(root).resolve().name
    return _build_category(dataset, category, folder, train, test, has_gt, image_size, (max_train, max_test), seed)


def load_mvtec_loco(
    root: str | Path,
    category: str,
    image_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    dataset: str | None = None,
) -> ADCategory:
    """Load one MVTec LOCO AD category (Bergmann et al., IJCV 2022).

    train/good (validation is ignored); test/{good, logical_anomalies, structural_anomalies} and
    any other type folder present; masks are folders `ground_truth/<type>/<id>/000.png, 001.png ...`
    whose files are OR-ed (one file per defect region), or `<id>_mask.png` files as in ../shared/data.
    """
    layout = "<root>/<category>/{train/good, test/<type>, ground_truth/<type>/<id>/000.png}"
    folder = _category_dir(root, category, layout)
    has_gt = (folder / "ground_truth").is_dir()
    train, test = _mvtec_records(folder, 0, _loco_mask, has_gt)
    _check_nonempty(train, test, folder)
    dataset = dataset or Path(root).resolve().name
    return _build_category(dataset, category, folder, train, test, has_gt, image_size, (max_train, max_test), seed)


def load_visa(
    root: str | Path,
    category: str,
    image_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    dataset: str = "visa",
) -> ADCategory:
    """Load one VisA category (Zou et al., ECCV 2022) from its raw layout and `split_csv/1cls.csv`.

    CSV columns: object, split (train/test), label (normal/anomaly), image, mask; paths are relative
    to `root` (e.g. `candle/Data/Images/Normal/0000.JPG`, `candle/Data/Masks/Anomaly/000.png`, where
    a non-zero pixel is defective). Anomalous rows of the train split, if any, are left out.
    """
    root = Path(root)
    csv_path = root / "split_csv" / "1cls.csv"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: VisA root not found (expected {csv_path.name} in <root>/split_csv/)")
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path}: VisA split file not found (expected columns object,split,label,image,mask)"
        )
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = {"object", "split", "label", "image", "mask"}
    if rows and not needed <= set(rows[0]):
        raise ValueError(f"{csv_path}: needs columns {sorted(needed)}, has {sorted(rows[0])}")
    objects = sorted({r["object"] for r in rows})
    rows = [r for r in rows if r["object"] == category]
    if not rows:
        raise FileNotFoundError(f"category {category!r} not found in {csv_path}; categories there: {objects}")
    train: list[_Record] = []
    test: list[_Record] = []
    for r in rows:
        label = 1 if r["label"].strip().lower() == "anomaly" else 0
        path = root / r["image"]
        if r["split"].strip().lower() == "train":
            if label == 0:
                train.append(_Record(path, 0, "good"))
        elif label == 0:
            test.append(_Record(path, 0, "good", "zeros"))
        else:
            if not r["mask"].strip():
                raise ValueError(f"{csv_path}: anomalous image {r['image']} has no mask entry")
            mask = root / r["mask"]
            if not mask.is_file():
                raise FileNotFoundError(f"{mask}: mask file not found for defective image {path}")
            test.append(_Record(path, 1, "anomaly", mask))
    if not train:
        raise ValueError(f"{csv_path}: no normal training images for {category!r}")
    if not test:
        raise ValueError(f"{csv_path}: no test images for {category!r}")
    train.sort(key=lambda r: str(r.path))
    test.sort(key=lambda r: (r.label, str(r.path)))
    return _build_category(
        dataset, category, root / category, train, test, True, image_size, (max_train, max_test), seed
    )


def load_texture_ad(
    root: str | Path,
    category: str,
    image_size: int = 256,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    dataset: str = "texture_ad",
) -> ADCategory:
    """Load a Texture-AD style category: `<root>/<category>/<subclass>/<MVTec layout>`.

    All subclasses go into one ADCategory; `split.subclasses` indexes the sorted `subclass_names`.
    A subclass with test images but no train/good images is *unseen* (listed in
    `unseen_subclasses`): its images appear only at test time, the setting of Adapted-MoE.
    Masks are None only if no subclass has a ground_truth folder. Caps are stratified by subclass.
    """
    folder = _category_dir(root, category, "<root>/<category>/<subclass>/{train/good, test/<type>, ground_truth}")
    names = [s for s in _subdirs(folder) if (folder / s / "train").is_dir() or (folder / s / "test").is_dir()]
    if not names:
        raise ValueError(f"{folder}: no subclass folders with train/ or test/ inside")
    has_gt = any((folder / s / "ground_truth").is_dir() for s in names)
    train: list[_Record] = []
    test: list[_Record] = []
    unseen: list[str] = []
    for i, name in enumerate(names):
        tr, te = _mvtec_records(folder / name, i, _stem_mask, has_gt)
        if not tr and te:
            unseen.append(name)
        train += tr
        test += te
    if not train:
        raise ValueError(f"{folder}: no training images in any <subclass>/train/good")
    if not test:
        raise ValueError(f"{folder}: no test images in any <subclass>/test/<type>")
    caps = (max_train, max_test)
    return _build_category(dataset, category, folder, train, test, has_gt, image_size, caps, seed, names, unseen)


# ---------------------------------------------------------------------------------------------
# The shared real data (../shared/data)
# ---------------------------------------------------------------------------------------------

SHARED_SETS: list[tuple[str, str]] = [
    ("kolektorsdd", "commutator"),
    ("magnetic_tile", "tile"),
    ("mvtec_3d", "tire"),
    ("mvtec_loco", "juice_bottle"),
    ("mvtec_ad", "bottle"),
]
HELD_OUT_SETS: list[tuple[str, str]] = [("mpdd_derived", "metal_plate")]  # final reports only

DATA_ROOT_ENV = "ADLIB_DATA_ROOT"


def find_data_root(path: str | Path | None = None) -> Path | None:
    """Where the shared real data lives, or None.

    In order: `path` (an error if given but missing), the environment variable ADLIB_DATA_ROOT,
    `../shared/data` next to the repository (the parent of the `adlib` package), `../shared/data`
    relative to the working directory.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: data root not found (expected <dataset>/<category>/ folders)")
        return p.resolve()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p.resolve()
        warnings.warn(f"{DATA_ROOT_ENV}={env} does not exist; looking in the default places", stacklevel=2)
    repo_root = Path(__file__).resolve().parent.parent
    for candidate in (repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def load_shared(
    data_root: str | Path | None,
    image_size: int,
    max_train: int | None = None,
    max_test: int | None = None,
    include_held_out: bool = False,
    seed: int = 0,
) -> list[ADCategory]:
    """Every set of SHARED_SETS (and HELD_OUT_SETS if asked) found under `data_root`.

    Sets that are absent are skipped with a warning; `data_root=None` means :func:`find_data_root`.
    Held-out sets come back with `held_out=True`: they are for the final table only.
    """
    root = find_data_root(data_root)
    if root is None:
        warnings.warn("no shared data found (set ADLIB_DATA_ROOT or pass data_root); skipping", stacklevel=2)
        return []
    sets = [(d, c, False) for d, c in SHARED_SETS]
    if include_held_out:
        sets += [(d, c, True) for d, c in HELD_OUT_SETS]
    out = []
    for dataset, category, held_out in sets:
        if not (root / dataset / category).is_dir():
            warnings.warn(f"skipping {dataset}/{category}: not found under {root}", stacklevel=2)
            continue
        loader = load_mvtec_loco if dataset == "mvtec_loco" else load_mvtec
        cat = loader(root / dataset, category, image_size, max_train, max_test, seed=seed, dataset=dataset)
        cat.held_out = held_out
        out.append(cat)
    return out
