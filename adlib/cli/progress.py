"""Progress of a notebook run: "cell k (n of m), elapsed", one updating line on a terminal, sparse in logs."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

PROGRESS_EVERY_S = 30.0  # without a terminal: at most one progress line this often, and cells longer than this


def clock(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CellProgress:
    """Which cell of which notebook runs: 'cell k (n of m), elapsed', quiet enough for logs.

    On a terminal, one line updated every second; otherwise a line at most every `every` seconds and
    one for each cell that took longer than that. Fed by papermill's cell_start / cell_complete.
    """

    def __init__(self, notebook: str, stream: IO[str] | None = None, every: float | None = None) -> None:
        self.notebook = notebook
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = PROGRESS_EVERY_S if every is None else every
        self.cell: int | None = None  # index of the running cell (or the last one started)
        self.n_cells = 0
        self.t0 = self.t_cell = self.t_line = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _status(self) -> str:
        now = time.monotonic()
        return f"    cell {self.cell} ({self.cell + 1} of {self.n_cells}), {clock(now - self.t0)} elapsed"

    def _write(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self.stream.write("\r" + text.ljust(72))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self.t_line = time.monotonic()

    def start(self, index: int, n_cells: int) -> None:
        self.cell, self.n_cells, self.t_cell = index, n_cells, time.monotonic()
        if self.tty:
            self._write(self._status())

    def complete(self, index: int) -> None:
        took = time.monotonic() - self.t_cell
        if not self.tty and took >= self.every:
            self._write(f"    cell {index} ({index + 1} of {self.n_cells}) took {clock(took)}")

    def tick(self) -> None:
        """Called every second by the ticker thread."""
        if self.cell is None:
            return
        if self.tty or time.monotonic() - self.t_line >= self.every:
            self._write(self._status() + ("" if self.tty else f", this cell {clock(time.monotonic() - self.t_cell)}"))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    @contextlib.contextmanager
    def watching(self) -> Iterator[CellProgress]:
        """Follow papermill's cells (its NotebookExecutionManager hooks) and tick, for the duration."""
        from papermill.engines import NotebookExecutionManager as Manager

        start, complete = Manager.cell_start, Manager.cell_complete

        def cell_start(man: Any, cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
            if cell_index is not None:
                self.start(cell_index, len(man.nb.cells))
            return start(man, cell, cell_index, **kw)

        def cell_complete(man: Any, cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
            if cell_index is not None:
                self.complete(cell_index)
            return complete(man, cell, cell_index, **kw)

        Manager.cell_start, Manager.cell_complete = cell_start, cell_complete  # type: ignore[method-assign]
        ticker = threading.Thread(target=self._run, daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            Manager.cell_start, Manager.cell_complete = start, complete  # type: ignore[method-assign]
            self._stop.set()
            ticker.join()
            if self.tty and self.cell is not None:  # clear the progress line for what follows
                self.stream.write("\r" + " " * 72 + "\r")
                self.stream.flush()
