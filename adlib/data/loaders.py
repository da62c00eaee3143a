"""Readers of image and mask files and the loaders of the public layouts, all returning ADCategory.

MVTec AD (also MPDD, MVTec 3D-AD RGB and `../shared/data`) and MVTec LOCO share one reader of the
MVTec layout that differs only in where a defective image's mask is (:func:`load_mvtec`,
:func:`load_mvtec_loco`); VisA reads its split CSV, Texture-AD a folder per subclass.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .container import ADCategory, ADSplit

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


def check_image_size(image_size: object, name: str = "image_size") -> int:
    """`image_size` as a positive int, else a ValueError naming the parameter."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size < 1:
        raise ValueError(f"{name} must be a positive integer (pixels of the square side), got {image_size!r}")
    return int(image_size)


def read_image(path: str | Path, size: int) -> np.ndarray:
    """Read an image file as RGB, resized (bilinear, antialiased) to a square: uint8 [S, S, 3]."""
    size = check_image_size(size, "size")
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
    size = check_image_size(size, "size")
    im = _open_image(path, None)  # as stored: palette indices and 16-bit labels stay as they are
    if expected_hw is not None and (im.height, im.width) != tuple(expected_hw):
        image = f"its image {image_path}" if image_path is not None else "its image"
        raise ValueError(
            f"{path}: mask is {im.height}x{im.width} (HxW) but {image} is {expected_hw[0]}x{expected_hw[1]}"
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
MaskLookup = Callable[[Path, str, Path], MaskSource]  # (ground_truth dir, defect type, image) -> mask


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
    # Only defective images have mask files; one without a defect pixel is a labelling error. (A defect
    # that vanishes in the resize is not: read_mask documents it.)
    if not out.any() and not any(np.asarray(_open_image(Path(f), None)).any() for f in files):
        warnings.warn(
            f"{files[0]}: the mask of defective image {image_path} is all black; its pixels all count as normal",
            stacklevel=2,
        )
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
    """`<root>/<category>` (`~` expanded), with errors that say what exists instead."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found (expected the layout {layout})")
    folder = root / category
    if not folder.is_dir():
        raise FileNotFoundError(f"category {category!r} not found in {root}; categories there: {_subdirs(root)}")
    return folder


def _mvtec_records(
    folder: Path,
    subclass: int,
    mask_lookup: MaskLookup,
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


def _load_mvtec_layout(
    root: str | Path,
    category: str,
    layout: str,
    mask_lookup: MaskLookup,
    image_size: int,
    caps: tuple[int | None, int | None],
    seed: int,
    dataset: str | None,
) -> ADCategory:
    """The one reader of the MVTec layout; `mask_lookup` says where a defective image's mask is."""
    check_image_size(image_size)
    folder = _category_dir(root, category, layout)
    has_gt = (folder / "ground_truth").is_dir()
    train, test = _mvtec_records(folder, 0, mask_lookup, has_gt)
    _check_nonempty(train, test, folder)
    dataset = dataset or Path(root).resolve().name
    return _build_category(dataset, category, folder, train, test, has_gt, image_size, caps, seed)


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
    return _load_mvtec_layout(
        root, category, MVTEC_LAYOUT, _stem_mask, image_size, (max_train, max_test), seed, dataset
    )


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
    return _load_mvtec_layout(root, category, layout, _loco_mask, image_size, (max_train, max_test), seed, dataset)


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
    check_image_size(image_size)
    root = Path(root).expanduser()
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
    check_image_size(image_size)
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
