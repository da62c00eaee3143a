"""Loaders on tiny trees made in tmp_path, their error messages, and the shared real data."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adlib.data import (
    HELD_OUT_SETS,
    SHARED_SETS,
    ADSplit,
    concat_splits,
    find_data_root,
    load_mvtec,
    load_mvtec_loco,
    load_shared,
    load_texture_ad,
    load_visa,
    read_image,
    read_mask,
)

SIZE = 16


def write_image(path: Path, hw: tuple[int, int] = (20, 24), value: int = 128, grey: bool = False) -> Path:
    """A small image file; the format follows the suffix (.png, .jpg, .bmp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = () if grey else (3,)
    Image.fromarray(np.full(hw + channels, value, np.uint8)).save(path)
    return path


def write_mask(path: Path, hw: tuple[int, int] = (20, 24), box=(5, 15, 6, 18), value: int = 255) -> Path:
    """A mask file with one defective rectangle `box` = (y0, y1, x0, x1)."""
    m = np.zeros(hw, np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return path


def make_mvtec(root: Path, category: str = "widget", masks: bool = True, n_train: int = 4) -> Path:
    """<root>/<category>/{train/good, test/{good,crack,dent}, ground_truth/{crack,dent}}."""
    c = root / category
    for i in range(n_train):
        write_image(c / "train" / "good" / f"{i:03d}.png", value=100 + i)
    for i in range(3):
        write_image(c / "test" / "good" / f"{i:03d}.jpg", value=110)
    for t in ("crack", "dent"):
        for i in range(2):
            write_image(c / "test" / t / f"{i:03d}.png", value=60)
            if masks:
                write_mask(c / "ground_truth" / t / f"{i:03d}_mask.png")
    return root


# ---------------------------------------------------------------------------------------------
# Reading single files
# ---------------------------------------------------------------------------------------------


def test_read_image_converts_grey_and_resizes(tmp_path):
    p = write_image(tmp_path / "g.png", (30, 10), value=77, grey=True)
    img = read_image(p, SIZE)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert (img == 77).all()


def test_read_mask_binarises_and_resizes(tmp_path):
    p = write_mask(tmp_path / "m.png", (32, 32), box=(0, 16, 0, 32), value=1)  # VisA-style value 1
    m = read_mask(p, 8, expected_hw=(32, 32))
    assert m.dtype == bool and m.shape == (8, 8)
    assert m[:4].all() and not m[4:].any()


def test_read_mask_palette_indices(tmp_path):
    """A palette mask: index 1 is defective even where its palette colour is black."""
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).convert("P")
    im.putpalette([0, 0, 0] * 256)
    im.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png", 2).tolist() == [[False, True], [True, False]]


def test_read_image_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png", SIZE)
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(ValueError, match=r"garbage\.png: cannot read image"):
        read_image(bad, SIZE)


def test_read_mask_wrong_size_names_both_files(tmp_path):
    m = write_mask(tmp_path / "m_mask.png", (10, 10))
    with pytest.raises(ValueError, match=r"m_mask\.png.*10x10.*img\.png.*20x24"):
        read_mask(m, SIZE, expected_hw=(20, 24), image_path=tmp_path / "img.png")


# ---------------------------------------------------------------------------------------------
# MVTec layout
# ---------------------------------------------------------------------------------------------


def test_load_mvtec_with_masks(tmp_path):
    cat = load_mvtec(make_mvtec(tmp_path / "toyset"), "widget", image_size=SIZE)
    assert cat.dataset == "toyset" and cat.category == "widget" and cat.key == "toyset/widget"
    assert cat.train.images.shape == (4, SIZE, SIZE, 3) and cat.train.masks is None
    t = cat.test
    assert t.defect_types == ["crack", "crack", "dent", "dent", "good", "good", "good"]  # sorted type folders
    assert t.labels.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert t.masks is not None and t.masks.shape == (7, SIZE, SIZE)
    assert all(t.masks[i].any() for i in range(4)) and not t.masks[4:].any()
    assert t.names[0].endswith("test/crack/000.png")


def test_load_mvtec_without_ground_truth_has_no_masks(tmp_path):
    cat = load_mvtec(make_mvtec(tmp_path / "d", masks=False), "widget", image_size=SIZE)
    assert cat.test.masks is None and not cat.test.has_masks
    assert cat.test.labels.sum() == 4


def test_load_mvtec_ignores_other_folders_and_extensions(tmp_path):
    root = make_mvtec(tmp_path / "d")
    write_image(root / "widget" / "validation" / "good" / "000.png")
    (root / "widget" / "train" / "good" / "notes.txt").write_text("not an image")
    write_image(root / "widget" / "train" / "good" / "zz.BMP")
    cat = load_mvtec(root, "widget", image_size=SIZE)
    assert len(cat.train) == 5 and cat.train.names[-1].endswith("zz.BMP")


def test_load_mvtec_caps_are_seeded_stratified_and_sorted(tmp_path):
    root = make_mvtec(tmp_path / "d", n_train=10)
    a = load_mvtec(root, "widget", SIZE, max_train=3, max_test=3, seed=1)
    b = load_mvtec(root, "widget", SIZE, max_train=3, max_test=3, seed=1)
    assert a.train.names == b.train.names and a.test.names == b.test.names
    assert len(a.train) == 3 and a.train.names == sorted(a.train.names)
    assert len(a.test) == 3 and set(a.test.labels.tolist()) == {0, 1}
    full = load_mvtec(root, "widget", SIZE).test.names
    assert [full.index(n) for n in a.test.names] == sorted(full.index(n) for n in a.test.names)
    others = {tuple(load_mvtec(root, "widget", SIZE, max_train=3, seed=s).train.names) for s in range(6)}
    assert len(others) > 1


def test_mvtec_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing_root.*train/good"):
        load_mvtec(tmp_path / "missing_root", "widget")
    root = make_mvtec(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"'gadget'.*\['widget'\]"):
        load_mvtec(root, "gadget")
    # empty train/good
    (root / "empty" / "train" / "good").mkdir(parents=True)
    write_image(root / "empty" / "test" / "good" / "0.png")
    with pytest.raises(ValueError, match=r"empty/train/good: no training images"):
        load_mvtec(root, "empty")
    # no test images
    write_image(root / "notest" / "train" / "good" / "0.png")
    with pytest.raises(ValueError, match=r"notest/test: no test images"):
        load_mvtec(root, "notest")


def test_mvtec_missing_mask_file_is_named(tmp_path):
    root = make_mvtec(tmp_path / "d")
    (root / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"dent/001_mask\.png: mask file not found"):
        load_mvtec(root, "widget", SIZE)


def test_mvtec_corrupt_image_and_wrong_mask_size(tmp_path):
    root = make_mvtec(tmp_path / "d")
    (root / "widget" / "test" / "crack" / "001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=r"crack/001\.png: cannot read image"):
        load_mvtec(root, "widget", SIZE)
    root = make_mvtec(tmp_path / "e")
    write_mask(root / "widget" / "ground_truth" / "dent" / "000_mask.png", hw=(40, 40))
    with pytest.raises(ValueError, match=r"dent/000_mask\.png: mask is 40x40.*dent/000\.png is 20x24"):
        load_mvtec(root, "widget", SIZE)


# ---------------------------------------------------------------------------------------------
# MVTec LOCO, VisA, Texture-AD
# ---------------------------------------------------------------------------------------------


def test_load_mvtec_loco_ors_mask_folders(tmp_path):
    c = tmp_path / "loco" / "box"
    for i in range(3):
        write_image(c / "train" / "good" / f"{i:03d}.png")
    write_image(c / "validation" / "good" / "000.png")
    write_image(c / "test" / "good" / "000.png")
    write_image(c / "test" / "logical_anomalies" / "000.png", (32, 32))
    write_mask(c / "ground_truth" / "logical_anomalies" / "000" / "000.png", (32, 32), box=(0, 16, 0, 16))
    write_mask(c / "ground_truth" / "logical_anomalies" / "000" / "001.png", (32, 32), box=(16, 32, 16, 32))
    write_image(c / "test" / "structural_anomalies" / "000.png", (32, 32))  # fallback: <id>_mask.png
    write_mask(c / "ground_truth" / "structural_anomalies" / "000_mask.png", (32, 32), box=(0, 8, 0, 32))
    cat = load_mvtec_loco(tmp_path / "loco", "box", image_size=8)
    assert len(cat.train) == 3
    assert cat.test.defect_types == ["good", "logical_anomalies", "structural_anomalies"]
    m = cat.test.masks
    assert not m[0].any()
    assert m[1][:4, :4].all() and m[1][4:, 4:].all() and not m[1][:4, 4:].any()  # two files OR-ed
    assert m[2][:2].all() and not m[2][2:].any()


def test_load_mvtec_loco_missing_mask_folder(tmp_path):
    c = tmp_path / "loco" / "box"
    write_image(c / "train" / "good" / "000.png")
    write_image(c / "test" / "logical_anomalies" / "007.png")
    (c / "ground_truth" / "logical_anomalies").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"logical_anomalies/007: mask folder not found"):
        load_mvtec_loco(tmp_path / "loco", "box", SIZE)


def make_visa(root: Path) -> Path:
    rows = []
    for i in range(3):
        write_image(root / "candle" / "Data" / "Images" / "Normal" / f"{i:04d}.JPG")
        rows.append(["candle", "train", "normal", f"candle/Data/Images/Normal/{i:04d}.JPG", ""])
    write_image(root / "candle" / "Data" / "Images" / "Normal" / "0100.JPG")
    rows.append(["candle", "test", "normal", "candle/Data/Images/Normal/0100.JPG", ""])
    for i in range(2):
        write_image(root / "candle" / "Data" / "Images" / "Anomaly" / f"{i:03d}.JPG")
        write_mask(root / "candle" / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png", value=1)
        rows.append(
            [
                "candle",
                "test",
                "anomaly",
                f"candle/Data/Images/Anomaly/{i:03d}.JPG",
                f"candle/Data/Masks/Anomaly/{i:03d}.png",
            ]
        )
    write_image(root / "pcb1" / "Data" / "Images" / "Normal" / "0000.JPG")
    rows.append(["pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return root


def test_load_visa(tmp_path):
    cat = load_visa(make_visa(tmp_path / "VisA"), "candle", image_size=SIZE)
    assert cat.dataset == "visa" and len(cat.train) == 3
    assert cat.test.labels.tolist() == [0, 1, 1]
    assert not cat.test.masks[0].any() and cat.test.masks[1:].any(axis=(1, 2)).all()
    with pytest.raises(FileNotFoundError, match=r"'capsules'.*\['candle', 'pcb1'\]"):
        load_visa(tmp_path / "VisA", "capsules")
    with pytest.raises(FileNotFoundError, match=r"split_csv/1cls\.csv"):
        load_visa(tmp_path / "VisA" / "candle", "candle")


def test_load_texture_ad_subclasses_and_unseen(tmp_path):
    root = tmp_path / "tad"
    for sub in ("cotton", "linen"):
        make_mvtec(root / "cloth", sub, n_train=2)
    # "silk" has test images but no train/good: unseen
    s = root / "cloth" / "silk"
    write_image(s / "test" / "good" / "000.png")
    write_image(s / "test" / "hole" / "000.png")
    write_mask(s / "ground_truth" / "hole" / "000_mask.png")
    cat = load_texture_ad(root, "cloth", image_size=SIZE)
    assert cat.subclass_names == ["cotton", "linen", "silk"]
    assert cat.unseen_subclasses == ["silk"]
    assert cat.train.subclasses.tolist() == [0, 0, 1, 1]
    assert set(cat.test.subclasses.tolist()) == {0, 1, 2}
    assert (cat.test.subclasses == 2).sum() == 2 and cat.test.masks is not None
    capped = load_texture_ad(root, "cloth", image_size=SIZE, max_test=6)
    assert set(capped.test.subclasses.tolist()) == {0, 1, 2} and len(capped.test) == 6


def test_concat_splits():
    a = ADSplit(
        np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), np.zeros((2, 4, 4), bool), ["good", "x"], ["a", "b"]
    )
    b = ADSplit(np.ones((1, 4, 4, 3), np.uint8), np.array([0]), None, ["good"], ["c"])
    ab = concat_splits([a, b])
    assert len(ab) == 3 and ab.masks is None and ab.names == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# Finding and loading the shared real data
# ---------------------------------------------------------------------------------------------


def test_find_data_root_explicit_env_and_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not_there"):
        find_data_root(tmp_path / "not_there")
    assert find_data_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("ADLIB_DATA_ROOT", str(tmp_path))
    assert find_data_root() == tmp_path.resolve()


def test_load_shared_skips_absent_sets(tmp_path):
    make_mvtec(tmp_path / "kolektorsdd", "commutator")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cats = load_shared(tmp_path, SIZE, include_held_out=True)
    assert [c.key for c in cats] == ["kolektorsdd/commutator"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5 and any(m.startswith("skipping magnetic_tile/tile: not found") for m in messages)


DATA_ROOT = find_data_root()
# (dataset, category): (train files, test good, test defective, has masks)
SHARED_COUNTS = {
    ("kolektorsdd", "commutator"): (278, 70, 52, True),
    ("magnetic_tile", "tile"): (762, 190, 388, True),
    ("mvtec_3d", "tire"): (210, 25, 87, True),
    ("mvtec_loco", "juice_bottle"): (335, 54, 142, True),
    ("mvtec_ad", "bottle"): (209, 20, 63, False),
    ("mpdd_derived", "metal_plate"): (41, 39, 81, True),
}


@pytest.mark.parametrize("dataset,category", SHARED_SETS + HELD_OUT_SETS)
def test_shared_set_loads(dataset, category):
    if DATA_ROOT is None or not (DATA_ROOT / dataset / category).is_dir():
        pytest.skip(f"shared data {dataset}/{category} not found")
    n_train, n_good, n_bad, has_masks = SHARED_COUNTS[(dataset, category)]
    held_out = (dataset, category) in HELD_OUT_SETS
    cats = load_shared(DATA_ROOT, 64, max_train=8, max_test=10, include_held_out=held_out)
    cat = next(c for c in cats if c.key == f"{dataset}/{category}")
    assert cat.held_out == held_out
    assert cat.train.images.shape == (8, 64, 64, 3) and (cat.train.labels == 0).all()
    t = cat.test
    assert len(t) == 10 and t.images.shape == (10, 64, 64, 3)
    n_test_bad = round(10 * n_bad / (n_good + n_bad))
    assert abs(int(t.labels.sum()) - n_test_bad) <= 1 and 0 < t.labels.sum() < 10
    assert all((d == "good") == (y == 0) for d, y in zip(t.defect_types, t.labels, strict=True))
    assert t.has_masks == has_masks
    if has_masks:
        assert not t.masks[t.labels == 0].any()
        # thin defects can vanish when a mask is shrunk and binarised at 0.5 (kolektorsdd at 64 px)
        assert t.masks[t.labels == 1].any(axis=(1, 2)).mean() >= 0.5
    if dataset == "mvtec_loco":  # its <id>_mask.png files also load with the plain MVTec loader
        plain = load_mvtec(DATA_ROOT / dataset, category, 64, max_train=8, max_test=10)
        assert plain.test.names == t.names and np.array_equal(plain.test.masks, t.masks)
    # the uncapped file counts match the README of ../shared/data
    folder = DATA_ROOT / dataset / category
    assert len(list((folder / "train" / "good").iterdir())) == n_train
    assert len(list((folder / "test" / "good").iterdir())) == n_good
