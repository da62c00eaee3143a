"""Offline backbones: the shipped Lite0 weights are the real ImageNet ones, the key mapping is exact,
the feature model is frozen with the documented shapes, and errors name what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adlib.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    lite0_weights_path,
    load_backbone,
    load_classifier,
    map_lukemelas_lite0,
)
from adlib.features import to_input

TABBY_CAT = 285  # ImageNet class "Egyptian cat"; skimage's chelsea is a tabby


def test_default_weights_classify_a_cat() -> None:
    """Random or mis-mapped weights would not put skimage's cat in class 285."""
    from skimage import data

    spec = BACKBONES[DEFAULT_BACKBONE]
    cat = np.array(Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR))  # [224, 224, 3]
    x = to_input(cat[None], spec.mean, spec.std)  # [1, 3, 224, 224]
    with torch.inference_mode():
        logits = load_classifier(DEFAULT_BACKBONE)(x)  # [1, 1000]
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == TABBY_CAT


def test_lukemelas_keys_map_onto_timm_exactly() -> None:
    import timm

    shipped = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    mapped = map_lukemelas_lite0(shipped)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(mapped) == len(shipped)  # no two keys collapse onto one
    assert set(mapped) == set(target)  # no missing, no unexpected keys
    bad_shapes = {k: (tuple(v.shape), tuple(target[k].shape)) for k, v in mapped.items() if v.shape != target[k].shape}
    assert not bad_shapes


def test_load_backbone_is_frozen_with_two_stages() -> None:
    model = load_backbone()
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert model.feature_info.channels() == [40, 112]
    assert model.feature_info.reduction() == [8, 16]
    with torch.inference_mode():
        maps = model(torch.zeros(1, 3, 64, 64))  # list of [1, C_l, 64 / stride_l, 64 / stride_l]
    assert [tuple(m.shape) for m in maps] == [(1, 40, 8, 8), (1, 112, 4, 4)]


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0",
        "wide_resnet50_2",
        "resnet18",
    ],
)
def test_default_layers_are_strides_8_and_16(name: str) -> None:
    """The BackboneSpec comment and FeatureExtractor ([N, C, S/8, S/8]) promise strides 8 and 16."""
    model = load_backbone(name, pretrained=False)
    assert model.feature_info.reduction() == [8, 16]


def test_unknown_backbone_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg16'.*efficientnet_lite0.*resnet18"):
        load_backbone("vgg16")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone("resnet18", weights=missing)


def test_uncached_paper_backbone_points_to_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No weights on disk and no network: the error says how to get them and names the offline default."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        hf_constants = None
    if hf_constants is not None:  # the hub reads its settings at import time
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    try:
        load_backbone("wide_resnet50_2")
    except FileNotFoundError as err:
        assert "efficientnet_lite0" in str(err)
        assert "wide_resnet50_2" in str(err)
    else:
        pytest.skip("wide_resnet50_2 weights were found on this machine")


def test_paper_backbone_lookup_is_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with network access and no HF_HUB_OFFLINE, the cache lookup must still not download."""
    import huggingface_hub.constants as hf_constants
    import timm.models._hub as timm_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # the default of an online machine
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    download_calls: list[object] = []

    def spy_download(*args: object, **kwargs: object) -> str:
        download_calls.append(args)
        raise OSError("test spy: no download in tests")

    monkeypatch.setattr(timm_hub, "hf_hub_download", spy_download)
    with pytest.raises(FileNotFoundError, match=DEFAULT_BACKBONE):
        load_backbone("wide_resnet50_2")
    assert not download_calls  # the lookup reads local caches only


def test_weights_file_round_trip(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    saved = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    model = load_backbone("resnet18", weights=path)
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], saved["conv1.weight"])
    assert torch.equal(loaded["layer2.0.conv1.weight"], saved["layer2.0.conv1.weight"])
    assert all(not p.requires_grad for p in model.parameters())
