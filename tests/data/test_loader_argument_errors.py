"""Issue 9, case 11: image_size=0 names the parameter, an all-black mask of a defective image warns,
and the mask-size message names the image once."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from adlib.data import load_mvtec, read_image, read_mask

from .test_loaders import make_mvtec, write_image, write_mask


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_image_size_must_be_positive_and_is_named(tmp_path: Path, size: object) -> None:
    make_mvtec(tmp_path, "widget")
    with pytest.raises(ValueError, match=r"^image_size must be a positive integer .*, got"):
        load_mvtec(tmp_path, "widget", size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^size must be a positive integer"):
        read_image(write_image(tmp_path / "a.png"), size)  # type: ignore[arg-type]


def test_an_all_black_mask_of_a_defective_image_warns(tmp_path: Path) -> None:
    make_mvtec(tmp_path, "widget")
    black = tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png"
    write_mask(black, value=0)
    with pytest.warns(UserWarning, match=r"001_mask\.png: the mask of defective image .*001\.png is all black"):
        cat = load_mvtec(tmp_path, "widget", 16)
    assert cat.test.masks is not None


def test_good_masks_do_not_warn(tmp_path: Path) -> None:
    make_mvtec(tmp_path, "widget")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mvtec(tmp_path, "widget", 16)


def test_mask_size_message_names_the_image_once(tmp_path: Path) -> None:
    m = write_mask(tmp_path / "m_mask.png", (10, 10))
    with pytest.raises(ValueError) as info:
        read_mask(m, 16, expected_hw=(20, 24), image_path=tmp_path / "img.png")
    assert str(info.value) == f"{m}: mask is 10x10 (HxW) but its image {tmp_path / 'img.png'} is 20x24"
    assert np.asarray(read_mask(m, 16)).shape == (16, 16)


def test_a_data_root_variable_that_points_nowhere_is_an_error_not_other_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adlib.data import find_data_root

    monkeypatch.setenv("ADLIB_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"^ADLIB_DATA_ROOT=.*gone: no such folder .*; unset it or point it"):
        find_data_root()
