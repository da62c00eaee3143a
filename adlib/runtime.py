"""Where and how a run executes, each defined once: repository root, caches, device, seed, machine."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "ADLIB_CACHE"
OUTPUTS_LOG_ENV = "ADLIB_OUTPUTS_LOG"  # set by `python -m adlib reproduce`: the file listing what a notebook wrote
NO_BARS_ENV = "ADLIB_NO_BARS"  # set by `python -m adlib reproduce`: no progress bars inside the notebooks


def cache_dir(kind: str = "features") -> Path:
    """``$ADLIB_CACHE`` (features) or its sibling ``<kind>`` folder; else ``.cache/<kind>`` in the repository.

    ``$ADLIB_CACHE`` names the feature cache, so that tests can share one; other kinds (trained models,
    score grids) live beside it.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(env).expanduser()
        return root if kind == "features" else root.parent / f"{root.name}_{kind}"
    return REPO_ROOT / ".cache" / kind


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    A reader (or a later run) sees the old file or the new one, never half of one; a run killed in
    the middle leaves at most a hidden ``.<name>.tmp<pid>`` file beside it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through a temporary file and a rename (see :func:`write_atomic`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def progress_bar(iterable=None, **kwargs):  # noqa: ANN001, ANN201 - tqdm's own signature
    """``tqdm.auto.tqdm(iterable, **kwargs)``, switched off where ``$ADLIB_NO_BARS`` is set.

    The notebook runner sets it: it reports progress per cell itself, and a widget bar's state is not saved
    in an executed copy, whose viewers then show every bar frozen at "0%".
    """
    from tqdm.auto import tqdm

    if os.environ.get(NO_BARS_ENV):
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; anything else is passed to torch.device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"DEVICE must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} was asked for, but torch sees no CUDA device")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (library code uses explicit generators)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def machine_description(device: torch.device | None = None) -> str:
    """CPU model and core count, plus the GPU when `device` is CUDA: printed with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if device is not None and device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text
