"""Re-run the numbered notebooks with papermill: `python -m adlib reproduce`.

Each notebook runs in `notebooks/` with its `parameters` cell overridden (PROFILE, DEVICE, SEED,
DATA_ROOT, OUT_DIR); its executed copy, with outputs, goes to `results/executed/<profile>/`.
The first failing notebook stops the run with the notebook and the cell named.

Notebooks execute through our papermill engine (`adlib.cli.engine`): it cannot miss a message from
the kernel (the cause of the hangs at the ipywidgets explorers), and a cell that shows no activity
for `inactivity_timeout` seconds (no output, no reply, no kernel CPU) fails with the notebook and
cell named; such a notebook is retried once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..runtime import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


INACTIVITY_TIMEOUT = 180  # seconds without a message from the kernel and without kernel CPU: a hang


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def list_notebooks(only: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb` in order; `only` keeps those whose number is listed."""
    books = sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            raise ValueError(
                f"--only {sorted(unknown)}: no such notebook in {notebook_dir} (have {[p.name[:2] for p in books]})"
            )
        books = [p for p in books if p.name[:2] in wanted]
    return books


def _failed_cell(path: Path) -> str:
    """The first cell of an executed notebook that holds an error output, as 'cell N: Ename: value'."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return (
                    f"cell {i} ({cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ''}): "
                    f"{out.get('ename')}: {out.get('evalue')}"
                )
    return "unknown cell"


def reproduce(
    profile: str = "ci",
    only: list[str] | None = None,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    out_dir: Path | None = None,
    kernel: str | None = None,
    figures_dir: Path | None = None,
    notebook_dir: Path | None = None,
    cell_timeout: int | None = None,
    inactivity_timeout: float | None = INACTIVITY_TIMEOUT,
    retries: int = 1,
) -> list[Path]:
    """Execute the notebooks in order; returns the executed copies. Raises NotebookFailed.

    `notebook_dir` defaults to `notebooks/` (tests pass a folder of tiny notebooks).
    `cell_timeout` (seconds) makes a cell that runs longer fail. `inactivity_timeout` (seconds; None
    or 0: off) fails a cell that shows no activity for that long; such a notebook is run again up to
    `retries` times before the run fails.
    """
    import papermill as pm

    from ..config import get_profile
    from .engine import ENGINE_NAME, CellInactive

    get_profile(profile)  # fail early on a bad profile name
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "results"
    executed_dir = out_dir / "executed" / profile
    executed_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures_dir) if figures_dir else REPO_ROOT / "figures"
    params = {
        "PROFILE": profile,
        "DEVICE": device,
        "SEED": seed,
        "OUT_DIR": str(out_dir.resolve()),
        "FIGURES_DIR": str(figures_dir.resolve()),
    }
    if data_root is not None:
        params["DATA_ROOT"] = str(Path(data_root).resolve())
    books = list_notebooks(only, Path(notebook_dir) if notebook_dir is not None else NOTEBOOK_DIR)
    done = []
    for k, book in enumerate(books, 1):
        target = executed_dir / book.name
        print(f"[{k}/{len(books)}] {book.name} (profile={profile}) ...", flush=True)
        t0 = time.perf_counter()
        for attempt in range(retries + 1):
            try:
                pm.execute_notebook(
                    str(book),
                    str(target),
                    parameters=params,
                    cwd=str(book.parent),
                    kernel_name=kernel,
                    engine_name=ENGINE_NAME,
                    progress_bar=False,
                    log_output=False,
                    execution_timeout=cell_timeout,
                    inactivity_timeout=inactivity_timeout,
                )
                break
            except CellInactive as err:
                msg = f"{book.name}, {err}"
                if attempt == retries:
                    raise NotebookFailed(f"{msg}; gave up after {retries + 1} attempts") from None
                print(f"    {msg}; running the notebook again", flush=True)
            except Exception as err:  # papermill raises PapermillExecutionError with the traceback
                where = _failed_cell(target) if target.exists() else "before the first cell"
                raise NotebookFailed(f"{book.name} failed at {where}\n  executed copy: {target}") from err
        seconds = time.perf_counter() - t0
        shown = target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target
        print(f"    done in {seconds:.0f} s -> {shown}", flush=True)
        _record_run(executed_dir / "RUN_INFO.json", book.name, seconds, profile, device)
        done.append(target)
    return done


def _record_run(path: Path, notebook: str, seconds: float, profile: str, device: str) -> None:
    """Which machine, versions and how long: one entry per executed notebook, next to the copies."""
    import datetime
    import json
    import platform

    import torch

    from ..runtime import machine_description, resolve_device

    info = json.loads(path.read_text()) if path.is_file() else {}
    info[notebook] = {
        "profile": profile,
        "seconds": round(seconds, 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(resolve_device(device)),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def main_reproduce(args) -> int:  # noqa: ANN001 - argparse.Namespace
    only = args.only.split(",") if args.only else None
    try:
        reproduce(
            args.profile,
            only,
            args.data_root,
            args.device,
            args.seed,
            kernel=args.kernel,
            cell_timeout=args.cell_timeout,
            inactivity_timeout=args.inactivity_timeout,
        )
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("tables: results/tables/   figures: figures/   executed notebooks: results/executed/")
    return 0
