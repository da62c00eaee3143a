"""Small builders shared by several test files (tiny notebooks, tiny subclass data, tiny budgets)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import torch

from adlib.methods.adapted_moe import AdaptedMoEConfig
from adlib.methods.base import TrainBudget
from adlib.methods.simplenet import SimpleNetConfig

PARAMETERS = 'PROFILE = "full"\nDEVICE = "auto"\nSEED = 0\nOUT_DIR = None\nDATA_ROOT = None\nFIGURES_DIR = None'

TINY = AdaptedMoEConfig(expert=SimpleNetConfig(hidden=32), top_k=2)
FAST = TrainBudget(steps=2, patches_per_step=64, router_steps=2, router_batch=4)  # a few steps: bookkeeping tests


def write_notebook(path: Path, *sources: str, parameters: str | None = None) -> Path:
    """A notebook of code cells; `parameters` becomes the first cell, tagged for papermill."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(s) for s in sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def subclass_data(g: torch.Generator, n_per: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """3 subclasses whose features [3*n_per, 8, 4, 4] differ in mean and scale (labels 2, 5, 7: not 0..K-1)."""
    means = torch.randn(3, 8, 1, 1, generator=g) * 2
    scales = torch.tensor([0.5, 1.0, 2.0])[:, None, None, None]
    feats = torch.cat([means[k] + scales[k] * torch.randn(n_per, 8, 4, 4, generator=g) for k in range(3)])
    return feats, np.repeat([2, 5, 7], n_per)
