"""Patch features (PatchCore section 3.1): normalisation, 3x3 aggregation, the extractor and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adlib import features
from adlib.data import ADSplit
from adlib.features import PADDINGS, FeatureConfig, FeatureExtractor, aggregate, cached_features, local_mean, to_input

SIZE = 64  # px; Lite0 strides 8 and 16 give 8x8 and 4x4 maps
CHANNELS = 40 + 112  # Lite0 out_indices (2, 3)


def make_split(n: int = 4, size: int = SIZE, seed: int = 0) -> ADSplit:
    """n random RGB images, all normal."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)  # [N, S, S, 3]
    return ADSplit(images, np.zeros(n, np.int64), None, ["good"] * n, [f"img{i}" for i in range(n)])


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig(), device="cpu", batch_size=4)


# ---------------------------------------------------------------------------------------------
# to_input and aggregate: small tensors, known answers
# ---------------------------------------------------------------------------------------------


def test_to_input_normalises_per_channel() -> None:
    images = np.zeros((1, 2, 2, 3), np.uint8)  # [N, S, S, 3]
    images[0, 0, 0] = (0, 255, 51)
    images[0, 1, 1] = (255, 0, 102)
    x = to_input(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [1, 3, 2, 2]
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-1.0, 1.0, -0.6]), atol=1e-6)  # (v/255 - 0.5) / 0.5
    assert torch.allclose(x[0, :, 1, 1], torch.tensor([1.0, -1.0, -0.2]), atol=1e-6)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    y = to_input(images, mean, std)
    expected = torch.tensor([(0 - mean[0]) / std[0], (1 - mean[1]) / std[1], (0.2 - mean[2]) / std[2]])
    assert torch.allclose(y[0, :, 0, 0], expected, atol=1e-5)


def test_aggregate_with_patch_size_1_is_concatenation() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 4, 5, 5, generator=g)
    out = aggregate([a, b], patch_size=1)
    assert torch.equal(out, torch.cat([a, b], dim=1))


def test_aggregate_shape_and_channel_order() -> None:
    g = torch.Generator().manual_seed(1)
    fine = torch.randn(2, 3, 6, 6, generator=g)  # [B, C_0, h_0, w_0]
    coarse = torch.full((2, 5, 3, 3), 7.0)  # [B, C_1, h_0 / 2, w_0 / 2], constant
    out = aggregate([fine, coarse], patch_size=1)
    assert out.shape == (2, 3 + 5, 6, 6)
    assert torch.equal(out[:, :3], fine)  # first-layer channels come first, untouched
    assert torch.allclose(out[:, 3:], torch.full((2, 5, 6, 6), 7.0))  # upsampled coarse map


def test_aggregate_averages_the_3x3_window() -> None:
    fmap = torch.arange(2 * 5 * 5, dtype=torch.float32).view(1, 2, 5, 5) ** 1.5  # not linear: a real mean test
    out = aggregate([fmap], patch_size=3)  # [1, 2, 5, 5]
    assert out.shape == fmap.shape
    for c, i, j in [(0, 2, 2), (1, 1, 3), (0, 3, 1)]:  # interior positions
        window = [fmap[0, c, i + di, j + dj].item() for di in (-1, 0, 1) for dj in (-1, 0, 1)]
        assert out[0, c, i, j].item() == pytest.approx(sum(window) / 9, rel=1e-6)
    corner = [fmap[0, 0, 0, 0].item(), fmap[0, 0, 0, 1].item(), fmap[0, 0, 1, 0].item(), fmap[0, 0, 1, 1].item()]
    assert out[0, 0, 0, 0].item() == pytest.approx(sum(corner) / 9, rel=1e-6)  # the default counts zero padding
    excl = aggregate([fmap], patch_size=3, padding="exclude")
    assert excl[0, 0, 0, 0].item() == pytest.approx(sum(corner) / 4, rel=1e-6)  # "exclude": padding not counted


def test_the_default_padding_is_the_border_rules_choice() -> None:
    """Notebook 01's rule chose "zeros" at the full profile; every default path must use it."""
    assert FeatureConfig().padding == "zeros"
    x = torch.ones(1, 1, 4, 4)
    assert local_mean(x)[0, 0, 0, 0].item() == pytest.approx(4 / 9)


# ---------------------------------------------------------------------------------------------
# FeatureExtractor
# ---------------------------------------------------------------------------------------------


def test_extractor_shape_dtype_and_determinism(extractor: FeatureExtractor) -> None:
    images = make_split(4).images
    first = extractor(images)
    assert first.shape == (4, CHANNELS, SIZE // 8, SIZE // 8) and first.dtype == torch.float32
    assert first.device.type == "cpu"
    assert torch.equal(first, extractor(images))
    assert first.std() > 0  # not a constant map


def test_extractor_is_batch_size_independent(extractor: FeatureExtractor) -> None:
    images = make_split(4, seed=1).images
    batched = extractor(images)
    one_by_one = FeatureExtractor(FeatureConfig(), device="cpu", batch_size=1)(images)
    assert torch.allclose(batched, one_by_one, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


class CallCounter:
    """Counts runs of FeatureExtractor.pyramid (i.e. of the backbone)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = FeatureExtractor.pyramid

        def counting(extractor: FeatureExtractor, images: np.ndarray, progress: bool = False) -> list[torch.Tensor]:
            self.calls += 1
            return original(extractor, images, progress)

        monkeypatch.setattr(FeatureExtractor, "pyramid", counting)


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.pt"))


def no_tmp_left(cache_dir: Path) -> bool:
    return not list(cache_dir.glob("*.tmp*"))


def test_cache_computes_once(extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CallCounter(monkeypatch)
    split = make_split(3)
    first = cached_features(extractor, split, "builtin-textures/brick", "train", cache_dir=tmp_path)
    assert counter.calls == 1
    second = cached_features(extractor, split, "builtin-textures/brick", "train", cache_dir=tmp_path)
    assert counter.calls == 1  # read back, the backbone did not run
    assert torch.equal(first, second)
    files = cache_files(tmp_path)
    assert len(files) == 1 and files[0].name.startswith("builtin-textures__brick__train__")
    assert no_tmp_left(tmp_path)


def test_every_key_part_makes_a_new_file(
    extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CallCounter(monkeypatch)
    split = make_split(2)
    changed_content = make_split(2, seed=5)
    changed_size = make_split(2, size=32)
    one_layer = FeatureExtractor(FeatureConfig(layers=(2,)), device="cpu")
    runs = [
        (extractor, split, "train"),
        (extractor, changed_content, "train"),  # other images, same count and size
        (extractor, split, "test"),  # other split name
        (extractor, changed_size, "train"),  # other image size
        (one_layer, split, "train"),  # other layers
    ]
    for k, (ext, s, name) in enumerate(runs, 1):
        cached_features(ext, s, "demo/cat", name, cache_dir=tmp_path)
        assert counter.calls == k
        assert len(cache_files(tmp_path)) == k
    assert no_tmp_left(tmp_path)
    for ext, s, name in runs:  # and each is now read back
        cached_features(ext, s, "demo/cat", name, cache_dir=tmp_path)
    assert counter.calls == len(runs)


def test_cache_reads_back_the_right_entry(extractor: FeatureExtractor, tmp_path: Path) -> None:
    a, b = make_split(2, seed=0), make_split(2, seed=1)
    fa = cached_features(extractor, a, "demo/cat", "train", cache_dir=tmp_path)
    fb = cached_features(extractor, b, "demo/cat", "train", cache_dir=tmp_path)
    assert not torch.allclose(fa, fb)
    assert torch.equal(cached_features(extractor, a, "demo/cat", "train", cache_dir=tmp_path), fa)


def test_failed_write_leaves_no_tmp(
    extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_write(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(features.torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        cached_features(extractor, make_split(1), "demo/cat", "train", cache_dir=tmp_path)
    assert not cache_files(tmp_path)  # no half-written entry ...
    assert no_tmp_left(tmp_path)  # ... and no leftover temporary file


def test_padding_and_patch_size_are_applied_on_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One cached entry of stage maps serves every padding and patch size (and equals a direct extraction)."""
    counter = CallCounter(monkeypatch)
    split = make_split(2)
    outs = {}
    for padding in PADDINGS:
        ext = FeatureExtractor(FeatureConfig(padding=padding), device="cpu")
        outs[padding] = cached_features(ext, split, "demo/cat", "train", cache_dir=tmp_path)
        torch.testing.assert_close(outs[padding], ext(split.images), atol=1e-5, rtol=1e-4)
    assert counter.calls == 1 + len(PADDINGS) and len(cache_files(tmp_path)) == 1  # 1 cached + 3 direct runs
    inner = (slice(None), slice(0, 40), slice(1, -1), slice(1, -1))  # stage 2 (40 ch) inside its outer ring
    torch.testing.assert_close(outs["exclude"][inner], outs["zeros"][inner])  # only the border differs
    assert not torch.allclose(outs["exclude"], outs["zeros"])


def test_local_mean_at_the_border_by_hand() -> None:
    x = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    # corner (0, 0): inside the window are 0, 1, 3, 4
    assert local_mean(x, 3, "exclude")[0, 0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert local_mean(x, 3, "zeros")[0, 0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 9)
    # reflect mirrors without repeating the edge: row -1 is row 1, column -1 is column 1
    assert local_mean(x, 3, "reflect")[0, 0, 0, 0] == pytest.approx((4 + 3 + 4 + 1 + 0 + 1 + 4 + 3 + 4) / 9)
    for padding in PADDINGS:
        assert local_mean(x, 3, padding)[0, 0, 1, 1] == pytest.approx(4.0)  # the centre sees no padding
    with pytest.raises(ValueError, match="padding must be one of"):
        local_mean(x, 3, "edge")
