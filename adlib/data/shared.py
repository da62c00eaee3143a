"""The shared real data sets (`../shared/data`) and the held-out rule.

`mpdd_derived/metal_plate` is *held out*: it appears only in final tables, never to choose a
method, a hyper-parameter or an epoch (:data:`HELD_OUT_SETS`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..runtime import REPO_ROOT
from .container import ADCategory
from .loaders import load_mvtec, load_mvtec_loco

# ---------------------------------------------------------------------------------------------

SHARED_SETS: list[tuple[str, str]] = [
    ("kolektorsdd", "commutator"),
    ("magnetic_tile", "tile"),
    ("mvtec_3d", "tire"),
    ("mvtec_loco", "juice_bottle"),
    ("mvtec_ad", "bottle"),
]
HELD_OUT_SETS: list[tuple[str, str]] = [("mpdd_derived", "metal_plate")]  # final reports only

DATA_ROOT_ENV = "ADLIB_DATA_ROOT"


def data_sets_in(root: str | Path) -> list[str]:
    """``"<dataset>/<category>"`` for every ``<root>/<dataset>/<category>/train/good`` folder, sorted."""
    good = [p for p in Path(root).glob("*/*/train/good") if p.is_dir()]  # <root>/<dataset>/<category>/train/good
    return sorted(f"{p.parents[2].name}/{p.parents[1].name}" for p in good)


def check_data_root(path: str | Path, what: str = "data root") -> Path:
    """`path` with `~` expanded and resolved against the working directory; it must hold a data set.

    For paths a user gives (``--data-root``, ``$ADLIB_DATA_ROOT``): a missing folder, or one without any
    ``<dataset>/<category>/train/good`` folder, is an error naming `what`, the path and the fix.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {path}: no such folder ({p})")
    if not data_sets_in(p):
        if any(p.glob("*/train/good")):
            hint = f"; {p.name} looks like one data set: give its parent {p.parent}"
        elif (p / "train" / "good").is_dir():
            hint = f"; {p.name} looks like one category: give {p.parent.parent}"
        else:
            hint = ""
        raise FileNotFoundError(f"{what} {p}: holds no data set (expected <dataset>/<category>/train/good/{hint})")
    return p


def find_data_root(path: str | Path | None = None) -> Path | None:
    """Where the shared real data lives, or None.

    In order: `path` (an error if given but missing), the environment variable ADLIB_DATA_ROOT (an
    error if set but missing), `../shared/data` next to the repository (the parent of the `adlib`
    package), `../shared/data` relative to the working directory. Relative paths are resolved against
    the working directory and `~` is expanded. The command line checks more (:func:`run_data_root`).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: data root not found (expected <dataset>/<category>/ folders)")
        return p.resolve()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"{DATA_ROOT_ENV}={env}: no such folder ({p.resolve()}); unset it or point it at a folder of "
                "<dataset>/<category>/ data sets"
            )
        return p.resolve()
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def run_data_root(path: str | Path | None = None) -> Path | None:
    """The data root of a command-line run, checked before any notebook starts; absolute or None.

    `path` (``--data-root``) or else ``$ADLIB_DATA_ROOT`` must exist and hold a data set
    (:func:`check_data_root`), resolved against the caller's working directory; without either, the
    default places of :func:`find_data_root` (None if none exists).
    """
    if path is not None:
        return check_data_root(path, "--data-root")
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return check_data_root(env, DATA_ROOT_ENV)
    return find_data_root(None)


def load_shared(
    data_root: str | Path | None,
    image_size: int,
    max_train: int | None = None,
    max_test: int | None = None,
    include_held_out: bool = False,
    seed: int = 0,
) -> list[ADCategory]:
    """Every set of SHARED_SETS (and HELD_OUT_SETS if asked) found under `data_root`.

    Sets that are absent are skipped with a warning; `data_root=None` means :func:`find_data_root`.
    Held-out sets come back with `held_out=True`: they are for the final table only.
    """
    root = find_data_root(data_root)
    if root is None:
        warnings.warn("no shared data found (set ADLIB_DATA_ROOT or pass data_root); skipping", stacklevel=2)
        return []
    sets = [(d, c, False) for d, c in SHARED_SETS]
    if include_held_out:
        sets += [(d, c, True) for d, c in HELD_OUT_SETS]
    out = []
    for dataset, category, held_out in sets:
        if not (root / dataset / category).is_dir():
            warnings.warn(f"skipping {dataset}/{category}: not found under {root}", stacklevel=2)
            continue
        loader = load_mvtec_loco if dataset == "mvtec_loco" else load_mvtec
        cat = loader(root / dataset, category, image_size, max_train, max_test, seed=seed, dataset=dataset)
        cat.held_out = held_out
        out.append(cat)
    return out
