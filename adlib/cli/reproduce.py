"""Re-run the numbered notebooks with papermill: `python -m adlib reproduce`.

Each notebook runs in `notebooks/` with its `parameters` cell overridden (PROFILE, DEVICE, SEED,
DATA_ROOT, OUT_DIR, FIGURES_DIR); its executed copy, with outputs, goes to `results/executed/<profile>/`.
The first failing notebook stops the run with the notebook and the cell named.

Notebooks execute through our papermill engine (`adlib.cli.engine`): it cannot miss a message from
the kernel (the cause of the hangs at the ipywidgets explorers), and a cell that shows no activity
for `inactivity_timeout` seconds (no output, no reply, no kernel CPU) fails with the notebook and
cell named; such a notebook is retried once.

What a run leaves behind belongs to it:

* an executed copy is written to `<name>.incomplete.ipynb` and replaces the last good copy only when
  the notebook succeeds; a failed or interrupted run keeps its copy as `<name>.FAILED.ipynb` or
  `<name>.INTERRUPTED.ipynb` beside the good one (leftovers of a killed run are removed next time);
* `RUN_INFO.json` (written atomically) holds, per notebook: machine, versions, seconds, the hash of
  the notebook's source (:func:`notebook_hash`) and the manifest of the files it wrote (tables and
  figures, as noted by `adlib.nb.Run` in ``$ADLIB_OUTPUTS_LOG``). After a notebook succeeds, the
  files of the same notebook and profile that it did not write this time (listed by the previous
  manifest, or named `<nb>_*_<profile>.*`) are removed: no table survives from a run on other data.

Cells are numbered as in the executed copy, from 0 (papermill inserts the injected parameters after
the `parameters` cell). Progress, "cell k (n of m), elapsed", is one updating line on a terminal and
otherwise a line every `PROGRESS_EVERY_S` seconds at most, plus one for every cell that took longer.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..runtime import NO_BARS_ENV, OUTPUTS_LOG_ENV, REPO_ROOT
from .progress import CellProgress
from .runinfo import RUN_INFO, manifest_name, read_run_info, record_entry, remove_stale, run_entry

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
INACTIVITY_TIMEOUT = 180  # seconds without a message from the kernel and without kernel CPU: a hang


class ReproduceError(RuntimeError):
    """The run cannot go on: names the notebook, file or setting and the cause."""


class NotebookFailed(ReproduceError):
    """A notebook raised: names the notebook, the cell and the error."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM during a run: says at which notebook and cell."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of `main_reproduce`, so that a terminated run cleans up as Ctrl-C does."""


# ----------------------------------------------------------------------------- notebooks
def list_notebooks(only: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb` in order; `only` keeps those whose number is listed.

    `only=None` keeps all; a list that names no number (`[""]`) or an unknown one is a ValueError.
    """
    books = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if only is None:
        return books
    wanted = {o.strip().zfill(2) for o in only if o.strip()}
    have = [p.name[:2] for p in books]
    if not wanted:
        raise ValueError(f"--only {','.join(only)!r}: names no notebook; give numbers such as 00,01 (have {have})")
    unknown = wanted - set(have)
    if unknown:
        raise ValueError(f"--only {sorted(unknown)}: no such notebook in {notebook_dir} (have {have})")
    return [p for p in books if p.name[:2] in wanted]


def _failed_cell(path: Path) -> str | None:
    """The first cell of an executed notebook that holds an error output, as 'cell N (...): Ename: value'."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - a half-written copy: no cell to name
        return None
    # papermill adds markdown cells tagged papermill-error-cell-tag around the error: not counted, so
    # that the index is the one the cell ran under (as in progress and interruption messages)
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
                return f"cell {i} ({first}): {out.get('ename')}: {out.get('evalue')}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable (inherited by the kernels started meanwhile), restore it after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ----------------------------------------------------------------------------- checks before any kernel starts
def check_kernel(kernel: str | None) -> None:
    """A ValueError naming the installed kernels when `kernel` is not one of them (None: the notebook's)."""
    if kernel is None:
        return
    from jupyter_client.kernelspec import KernelSpecManager

    have = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in have:
        raise ValueError(f"--kernel {kernel!r}: no such Jupyter kernel (installed: {', '.join(have) or 'none'})")


def check_device(device: str) -> None:
    """A ValueError when torch cannot use `device` here ('cuda' without CUDA, 'gpu', ...)."""
    import torch

    from ..runtime import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as err:
        if "no CUDA device" in str(err):
            raise ValueError(
                f"--device {device}: torch sees no CUDA device on this machine (use auto or cpu)"
            ) from None
        raise ValueError(f"--device {device}: not a torch device (use auto, cpu, cuda or cuda:N)") from None
    except (TypeError, ValueError):
        raise ValueError(f"--device {device!r}: not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReproduceError(
            f"{path}: cannot create the folder ({type(err).__name__}: {err.strerror or err})"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ReproduceError(f"{path}: folder is not writable")
    return path


# ----------------------------------------------------------------------------- the run
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
    """Execute the notebooks in order; returns the executed copies. Raises NotebookFailed or RunInterrupted.

    `notebook_dir` defaults to `notebooks/` (tests pass a folder of tiny notebooks); `out_dir` to
    `results/`, `figures_dir` to `figures/` beside `out_dir`. `data_root` (`~` expanded, relative to
    the working directory) or `$ADLIB_DATA_ROOT` must hold a data set; without either, the default
    places; the notebooks get it as an absolute DATA_ROOT. `cell_timeout` (seconds) makes a cell that
    runs longer fail. `inactivity_timeout` (seconds; None or 0: off) fails a cell that shows no
    activity for that long; such a notebook is run again up to `retries` times before the run fails.
    Everything is checked before the first kernel starts.
    """
    from ..config import get_profile
    from ..data.shared import run_data_root

    get_profile(profile)  # fail early on a bad profile name
    check_device(device)
    check_kernel(kernel)
    root = run_data_root(data_root)
    books = list_notebooks(only, Path(notebook_dir) if notebook_dir is not None else NOTEBOOK_DIR)
    out_dir = (Path(out_dir).expanduser() if out_dir else REPO_ROOT / "results").resolve()
    figures_dir = (Path(figures_dir).expanduser() if figures_dir else out_dir.parent / "figures").resolve()
    executed_dir = _writable_dir(out_dir / "executed" / profile)
    dirs = (_writable_dir(out_dir / "tables"), _writable_dir(figures_dir))
    for book in books:  # leftovers of a killed run of these notebooks; another process's live files stay
        for leftover in (executed_dir / f"{book.stem}.incomplete.ipynb", executed_dir / f".{book.stem}.outputs"):
            leftover.unlink(missing_ok=True)
    info_path = executed_dir / RUN_INFO
    info = read_run_info(info_path)
    params = {
        "PROFILE": profile,
        "DEVICE": device,
        "SEED": seed,
        "OUT_DIR": str(out_dir),
        "FIGURES_DIR": str(figures_dir),
        "DATA_ROOT": str(root) if root is not None else None,
    }
    done = []
    for k, book in enumerate(books, 1):
        print(f"[{k}/{len(books)}] {book.name} (profile={profile}) ...", flush=True)
        t0 = time.perf_counter()
        target, written = _run_notebook(
            book, k, len(books), executed_dir, params, kernel, cell_timeout, inactivity_timeout, retries
        )
        seconds = time.perf_counter() - t0
        stale = remove_stale(
            book.name[:2], profile, info.get(book.name, {}).get("outputs", []), written, dirs, out_dir.parent
        )
        outputs = sorted(manifest_name(p, out_dir.parent) for p in written)
        shown = target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target
        print(f"    done in {seconds:.0f} s -> {shown}; {len(outputs)} files written", flush=True)
        if stale:
            print(f"    removed {len(stale)} files of an earlier run: {', '.join(p.name for p in stale)}", flush=True)
        # the source that ran, not as it is now; read anew under a lock: another process may have recorded meanwhile
        info = record_entry(info_path, book.name, run_entry(target, seconds, profile, device, outputs))
        done.append(target)

    def show(p: Path) -> str:
        return f"{p.relative_to(REPO_ROOT)}/" if p.is_relative_to(REPO_ROOT) else f"{p}/"

    print(f"tables: {show(dirs[0])}   figures: {show(figures_dir)}   executed notebooks: {show(executed_dir)}")
    return done


def _run_notebook(
    book: Path,
    k: int,
    n: int,
    executed_dir: Path,
    params: dict[str, object],
    kernel: str | None,
    cell_timeout: int | None,
    inactivity_timeout: float | None,
    retries: int,
) -> tuple[Path, set[Path]]:
    """Execute one notebook into a temporary copy; on success it replaces the executed copy.

    Returns the executed copy and the files the notebook wrote. A failure keeps the partial copy as
    `<name>.FAILED.ipynb`, an interruption as `<name>.INTERRUPTED.ipynb`; the last good copy stays.
    """
    import papermill as pm

    from .engine import ENGINE_NAME, CellInactive

    target = executed_dir / book.name
    partial = executed_dir / f"{book.stem}.incomplete.ipynb"
    failed, interrupted = (executed_dir / f"{book.stem}.{tag}.ipynb" for tag in ("FAILED", "INTERRUPTED"))
    log = executed_dir / f".{book.stem}.outputs"
    progress = CellProgress(book.name)

    def keep(as_: Path) -> Path | None:
        if partial.is_file():
            os.replace(partial, as_)
            return as_
        return None

    def where() -> str:
        return "before the first cell" if progress.cell is None else f"at cell {progress.cell}"

    try:
        with _env(OUTPUTS_LOG_ENV, str(log)), _env(NO_BARS_ENV, "1"), progress.watching():
            for attempt in range(retries + 1):
                log.unlink(missing_ok=True)
                try:
                    pm.execute_notebook(
                        str(book),
                        str(partial),
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
                        keep(failed)
                        raise NotebookFailed(f"{msg}; gave up after {retries + 1} attempts") from None
                    print(f"    {msg}; running the notebook again", flush=True)
                except Exception as err:  # papermill raises PapermillExecutionError with the traceback
                    kept = keep(failed)
                    cell = _failed_cell(kept) if kept is not None else None
                    what = f"at {cell}" if cell else f"{where()}: {_first_line(err)}"
                    copy = f"\n  executed copy: {kept}" if kept is not None else ""
                    raise NotebookFailed(f"{book.name} failed {what}{copy}") from err
    except KeyboardInterrupt as err:
        if isinstance(err, RunInterrupted):
            raise
        kept = keep(interrupted)
        verb, code = ("terminated", 143) if isinstance(err, Terminated) else ("interrupted", 130)
        cell = "while its kernel started" if progress.cell is None else f"cell {progress.cell}"
        copy = f" (partial copy: {kept.name})" if kept is not None else ""
        raise RunInterrupted(f"{verb} at notebook {k} of {n} ({book.name}), {cell}{copy}", code) from None
    os.replace(partial, target)
    failed.unlink(missing_ok=True)
    interrupted.unlink(missing_ok=True)
    written = {Path(p) for p in log.read_text().splitlines() if p} if log.is_file() else set()
    log.unlink(missing_ok=True)
    return target, written


def _stop_kernels() -> None:
    """SIGTERM this process's children (the kernels papermill started): they end at once and silently.

    Left to papermill, an interrupted run asks a busy kernel to shut down, and the kernel prints a
    traceback for the reply it can no longer send. Linux only (reads /proc); elsewhere a no-op.
    """
    import signal

    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
            if ppid == me:
                os.kill(int(stat.parent.name), signal.SIGTERM)
        except (OSError, IndexError, ValueError):
            continue


def main_reproduce(args) -> int:  # noqa: ANN001 - argparse.Namespace, checked by adlib.cli
    """Run `reproduce` for the command line: one line and exit 1 on a failure, 130 on Ctrl-C, 143 on SIGTERM."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        _stop_kernels()
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reproduce(
            args.profile,
            args.only_list,
            args.data_root,
            args.device,
            args.seed,
            out_dir=args.out_dir,
            kernel=args.kernel,
            figures_dir=args.figures_dir,
            notebook_dir=args.notebook_dir,
            cell_timeout=args.cell_timeout,
            inactivity_timeout=args.inactivity_timeout,
        )
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        print("terminated" if isinstance(err, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
