"""What the first cells of every notebook need: checked parameters, paths, seed, device, versions.

A notebook's `parameters` cell holds plain values (papermill overwrites them), then calls
``run = setup(PROFILE=PROFILE, DEVICE=DEVICE, DATA_ROOT=DATA_ROOT, SEED=SEED, OUT_DIR=OUT_DIR)``.
Everything size-dependent then comes from ``run.profile``; tables go through :meth:`Run.save_table`
and figures through :meth:`Run.save_figure`, so nothing in `results/` or `figures/` is written by hand.
Both write atomically and, under the runner, note each file in ``$ADLIB_OUTPUTS_LOG``: the runner's
manifest of what a notebook wrote, from which it removes the files an earlier run left behind.
"""

from __future__ import annotations

import io
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import runtime, tables
from .config import Profile, get_profile
from .data import find_data_root
from .methods.base import TrainBudget
from .runtime import OUTPUTS_LOG_ENV, REPO_ROOT, machine_description, resolve_device, seed_everything, write_atomic


@dataclass
class Run:
    """The resolved settings of one notebook run."""

    profile: Profile
    device: torch.device
    seed: int
    data_root: Path | None  # ../shared/data or a user path; None if absent
    out_dir: Path  # results/
    figures_dir: Path  # figures/
    notebook: str  # e.g. "01", used as a prefix of every file written

    @property
    def tables_dir(self) -> Path:
        return self.out_dir / "tables"

    def _name(self, name: str) -> str:
        return f"{self.notebook}_{name}_{self.profile.name}"

    def _record(self, path: Path) -> Path:
        """Note `path` in the runner's list of this notebook's outputs (``$ADLIB_OUTPUTS_LOG``), if any."""
        log = os.environ.get(OUTPUTS_LOG_ENV)
        if log:
            with open(log, "a") as f:
                f.write(f"{path.resolve()}\n")
        return path

    def save_table(
        self,
        df,  # noqa: ANN001 - pandas DataFrame
        name: str,
        float_format: str = "%.4f",
        timings: Sequence[str] = (),
        caption: str = "",
        display=None,  # noqa: ANN001 - a pandas DataFrame of strings
        seeds=None,  # noqa: ANN001 - a pandas DataFrame, one row per seed
    ) -> Path:
        """Write `df` as results/tables/<nb>_<name>_<profile>.csv and .md; returns the CSV path.

        The CSV keeps the numbers (`float_format`); the Markdown shows `caption` (the setting: data,
        backbone, resolution, seeds) above the table, and either `display` (a table of strings made by
        ``adlib.tables.display_table``: "mean ± sd", flags) or `df` with the same float format, "—" for
        an undefined value.

        `timings` names wall-clock columns (e.g. ``["fit s", "score ms/img"]``). They differ from run to
        run, so they are kept out of the metric table: they go, with the table's non-float columns
        (those that say which row is which), to ``<nb>_<name>_timings_<profile>.csv`` and ``.md``, and
        two runs with one seed write byte-identical metric tables.

        `seeds` (one row per seed, with a ``seed`` column) is written beside the table as
        ``<nb>_<name>_seeds_<profile>.csv`` and ``.md``: the values a mean ± sd table and every paired test
        (``adlib.tables.paired_test``) are computed from, so that a reader can recompute both.
        """
        timings = [timings] if isinstance(timings, str) else list(timings)
        missing = [c for c in timings if c not in df.columns]
        if missing:
            raise ValueError(f"save_table({name!r}, timings=...): no column {missing} (columns: {list(df.columns)})")
        if timings:
            ids = [c for c in df.columns if c not in timings and df[c].dtype.kind not in "fc"]
            timing_caption = f"Wall-clock times on this machine, not results: {caption}" if caption else ""
            self._write_table(df[ids + timings], f"{name}_timings", float_format, timing_caption)
            df = df.drop(columns=timings)
            if display is not None:
                display = display.drop(columns=[c for c in timings if c in display.columns])
        if seeds is not None:  # the per-seed values the mean ± sd table and paired tests are computed from
            if "seed" not in seeds.columns:
                raise ValueError(
                    f"save_table({name!r}, seeds=...): needs a 'seed' column (columns: {list(seeds.columns)})"
                )
            seed_caption = f"Per-seed values of: {caption}" if caption else ""
            self._write_table(seeds.drop(columns=[c for c in timings if c in seeds.columns]), f"{name}_seeds",
                              float_format, seed_caption)  # fmt: skip
        return self._write_table(df, name, float_format, caption, display)

    def _write_table(self, df, name: str, float_format: str, caption: str = "", display=None) -> Path:  # noqa: ANN001
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        csv = self.tables_dir / f"{self._name(name)}.csv"
        write_atomic(csv, df.to_csv(index=False, float_format=float_format))
        shown = display if display is not None else tables.formatted(df, float_format)
        md = tables.to_markdown(shown, caption) if caption else shown.to_markdown(index=False, disable_numparse=True)
        header = f"<!-- generated by notebook {self.notebook}, profile {self.profile.name}; do not edit -->"
        md_path = write_atomic(self.tables_dir / f"{self._name(name)}.md", f"{header}\n{md.rstrip()}\n")
        self._record(md_path)
        return self._record(csv)

    def save_figure(self, fig, name: str) -> Path:  # noqa: ANN001 - matplotlib Figure
        """Save `fig` as figures/<nb>_<name>_<profile>.png, without metadata that changes between runs."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / f"{self._name(name)}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        return self._record(write_atomic(path, buf.getvalue()))

    def cache_dir(self, kind: str = "features") -> Path:
        return runtime.cache_dir(kind)

    def budget(self, seed: int | None = None, progress: bool = False) -> TrainBudget:
        """The profile's training budget on this run's device, with this run's seed unless given."""
        return self.profile.budget(self.device, self.seed if seed is None else seed, progress)


def _check(name: str, value: object, types: tuple[type, ...], what: str) -> None:
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        raise TypeError(f"parameter {name} must be {what}, got {value!r} ({type(value).__name__})")


def setup(
    PROFILE: str = "ci",
    DEVICE: str = "auto",
    DATA_ROOT: str | None = None,
    SEED: int = 0,
    OUT_DIR: str | None = None,
    FIGURES_DIR: str | None = None,
    notebook: str = "nb",
    verbose: bool = True,
) -> Run:
    """Validate the papermill parameters and return a :class:`Run`. Prints versions and settings."""
    _check("PROFILE", PROFILE, (str,), "'ci' or 'full'")
    _check("DEVICE", DEVICE, (str,), "a string such as 'auto', 'cpu' or 'cuda'")
    _check("SEED", SEED, (int,), "an integer")
    if DATA_ROOT is not None:
        _check("DATA_ROOT", DATA_ROOT, (str, os.PathLike), "a path string or None")
    if OUT_DIR is not None:
        _check("OUT_DIR", OUT_DIR, (str, os.PathLike), "a path string or None")
    if FIGURES_DIR is not None:
        _check("FIGURES_DIR", FIGURES_DIR, (str, os.PathLike), "a path string or None")
    profile = get_profile(PROFILE)
    device = resolve_device(DEVICE)
    seed_everything(SEED)
    run = Run(
        profile=profile,
        device=device,
        seed=SEED,
        data_root=find_data_root(DATA_ROOT),
        out_dir=Path(OUT_DIR) if OUT_DIR else REPO_ROOT / "results",
        figures_dir=Path(FIGURES_DIR) if FIGURES_DIR else REPO_ROOT / "figures",
        notebook=notebook,
    )
    if verbose:
        import timm

        print(
            f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
            f"numpy {np.__version__}"
        )
        print(f"machine: {machine_description(device)}")
        print(f"profile={profile.name} ({profile.image_size} px), device={device}, seed={SEED}")
        print(f"real data: {run.data_root if run.data_root else 'not found (built-in data only)'}")
    return run
