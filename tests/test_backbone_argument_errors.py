"""Issue 9, case 11: a weights file that is not a state dict, or layers the backbone lacks, are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adlib.backbones import load_backbone


def test_a_weights_file_that_is_not_a_state_dict_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth: cannot read weights \(.*\); expected a state dict"):
        load_backbone("resnet18", weights=text)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"tensor\.pth: holds a Tensor, not a state dict"):
        load_backbone("resnet18", weights=tensor)
    whole = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(ValueError, match=r"model\.pth: holds pickled Python objects \(a whole model\?\), not a state"):
        load_backbone("resnet18", weights=whole)


def test_a_state_dict_of_another_model_names_the_file(tmp_path: Path) -> None:
    other = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(RuntimeError, match=r"weights='.*linear\.pth' for 'resnet18' lack \d+ keys"):
        load_backbone("resnet18", weights=other)


@pytest.mark.parametrize("layers", [(7,), (), (2, 2), (-1,)])
def test_layers_the_backbone_lacks_are_named(layers: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"^layers=.*: backbone 'efficientnet_lite0' has stages 0\.\.4"):
        load_backbone(layers=layers, pretrained=False)
