"""An on-disk cache of computed objects (trained models), keyed by everything that determines them.

``cached(kind, key, compute)`` returns the object stored under ``key`` in ``runtime.cache_dir(kind)``,
or computes, stores and returns it. An entry holds its key: a file whose key differs (a hash
collision, a hand-copied file) or that cannot be read (a truncated write, another torch version) is
reported by path and recomputed. Writes go to a temporary file that is renamed, so an interrupted
run never leaves a half-written entry. Reopening a notebook therefore costs seconds, not the minutes
of training it took the first time.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from . import runtime

T = TypeVar("T")


def digest(value: Any) -> str:
    """A short content hash of an array, a tensor or anything JSON can write (sorted keys)."""
    h = hashlib.sha1()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        h.update(str((value.shape, value.dtype.str)).encode())
        h.update(np.ascontiguousarray(value).data)
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def entry_path(kind: str, key: dict[str, Any], directory: str | Path | None = None) -> Path:
    """Where ``cached(kind, key, ...)`` keeps its entry (``<digest of key>.pt`` in the ``kind`` cache)."""
    folder = Path(directory) if directory is not None else runtime.cache_dir(kind)
    return folder / f"{digest(key)}.pt"


def cached(
    kind: str,
    key: dict[str, Any],
    compute: Callable[[], T],
    directory: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    store: bool = True,
) -> T:
    """The object stored under `key` (a JSON-able dict) in the `kind` cache, else ``compute()``, stored.

    ``store=False`` computes without writing (the other ranks of a torchrun training: rank 0 writes).
    """
    path = entry_path(kind, key, directory)
    folder = path.parent
    text = json.dumps(key, sort_keys=True, default=str)
    if path.is_file():
        try:
            entry = torch.load(path, map_location=map_location, weights_only=False)
            if isinstance(entry, dict) and entry.get("key") == text:
                return entry["value"]
            warnings.warn(f"{path}: cache entry holds another key; recomputing it", stacklevel=2)
        except Exception as err:  # noqa: BLE001 - any unreadable entry is recomputed, and said so
            warnings.warn(f"{path}: unreadable cache entry ({type(err).__name__}: {err}); recomputing it", stacklevel=2)
    value = compute()
    if not store:
        return value
    folder.mkdir(parents=True, exist_ok=True)
    runtime.save_atomic({"key": text, "value": value}, path)
    return value
