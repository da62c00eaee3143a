"""RUN_INFO.json beside the executed copies: what ran where, from which source, and what it wrote.

Per notebook: machine, versions, seconds, the hash of the notebook's source (:func:`notebook_hash`) and
the manifest of the files it wrote. After a notebook succeeds, files of the same notebook and profile
that it did not write this time are removed (:func:`remove_stale`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

RUN_INFO = "RUN_INFO.json"


def notebook_hash(path: str | Path) -> str:
    """SHA-256 of a notebook's source: each cell's type and source, not outputs, ids or metadata.

    The cell papermill injects (tagged `injected-parameters`) is left out, so an executed copy hashes
    like the notebook it was run from.
    """
    nb = json.loads(Path(path).read_text())
    cells = [
        [c.get("cell_type", ""), "".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")]
        for c in nb.get("cells", [])
        if "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def read_run_info(path: Path) -> dict[str, Any]:
    """RUN_INFO.json as a dict ({} if absent). An unreadable one is set aside as `RUN_INFO.json.corrupt`."""
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict):
            raise ValueError(f"holds a {type(info).__name__}, not an object")
        return info
    except (ValueError, UnicodeDecodeError) as err:
        backup = path.with_name(path.name + ".corrupt")
        os.replace(path, backup)
        print(f"warning: {path}: not valid JSON ({err}); kept as {backup.name}, starting a new one", file=sys.stderr)
        return {}


def record_entry(path: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Set RUN_INFO's entry `name` to `entry`, reading the file anew under an exclusive lock; returns the new info.

    Two `reproduce` processes may share one executed folder (two notebooks at a time on two cores): each
    reads, updates and writes the file while holding a lock on the folder, so neither writes back
    the other's entries as they were when it started.
    """
    import fcntl

    from ..runtime import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)  # the lock is held on the folder itself: no lock file is left
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        info = read_run_info(path)
        info[name] = entry
        write_atomic(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    finally:
        os.close(folder)  # releases the lock
    return info


def run_entry(executed: Path, seconds: float, profile: str, device: str, outputs: list[str]) -> dict[str, Any]:
    """Which machine, versions, how long, which source and which files: one notebook's RUN_INFO entry.

    The source hash is taken from the executed copy (outputs and injected parameters aside), so it names the
    source that ran even when the notebook was edited while it ran.
    """
    import platform

    import torch

    from ..runtime import machine_description, resolve_device

    return {
        "profile": profile,
        "seconds": round(seconds, 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(resolve_device(device)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "source_sha256": notebook_hash(executed),
        "outputs": outputs,
    }


def manifest_name(path: Path, base: Path) -> str:
    """`path` relative to `base` (posix) where it lies inside, else absolute: how manifests name files."""
    path = path.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def remove_stale(
    notebook: str, profile: str, previous: list[str], written: set[Path], dirs: tuple[Path, Path], base: Path
) -> list[Path]:
    """Delete the files of `notebook` at `profile` that an earlier run wrote and this one did not.

    Candidates: the previous manifest and every `<nb>_*_<profile>.{csv,md}` in tables/ and
    `<nb>_*_<profile>.png` in figures/; only files inside those two folders are ever removed.
    """
    tables, figures = (d.resolve() for d in dirs)
    candidates = {(base / p).resolve() if not Path(p).is_absolute() else Path(p) for p in previous}
    for pattern, folder in ((f"{notebook}_*_{profile}.csv", tables), (f"{notebook}_*_{profile}.md", tables)):
        candidates |= set(folder.glob(pattern))
    candidates |= set(figures.glob(f"{notebook}_*_{profile}.png"))
    stale = sorted(p for p in candidates - written if p.is_file() and (p.parent == tables or p.parent == figures))
    for p in stale:
        p.unlink()
    return stale
