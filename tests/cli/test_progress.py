"""Issue 10: the runner says which cell runs ("cell k (n of m), elapsed"), quietly enough for logs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from adlib.cli import progress as progress_module
from adlib.cli.progress import CellProgress
from adlib.cli.reproduce import reproduce

from ..helpers import PARAMETERS, write_notebook


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_updating_line() -> None:
    out = Terminal()
    progress = CellProgress("00_a.ipynb", out)
    progress.start(0, 3)
    progress.tick()
    progress.complete(0)
    progress.start(1, 3)
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 3
    assert "cell 0 (1 of 3), 0:00 elapsed" in text and text.split("\r")[-1].startswith("    cell 1 (2 of 3)")


def test_a_log_gets_a_line_every_so_often_and_for_long_cells() -> None:
    out = io.StringIO()
    progress = CellProgress("00_a.ipynb", out, every=0.2)
    progress.start(0, 2)
    progress.tick()  # too soon: nothing
    progress.complete(0)  # quick: nothing
    assert out.getvalue() == ""
    progress.start(1, 2)
    time.sleep(0.25)
    progress.tick()
    progress.complete(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("    cell 1 (2 of 2), 0:00 elapsed, this cell 0:00")
    assert lines[1] == "    cell 1 (2 of 2) took 0:00"


def test_reproduce_reports_cells_as_they_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.5)
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_slow.ipynb", "x = 1", "import time; time.sleep(2.5)", parameters=PARAMETERS)
    reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder)
    out = capsys.readouterr().out
    assert "    cell 3 (4 of 4), " in out and "elapsed, this cell" in out  # while the slow cell runs
    assert "    cell 3 (4 of 4) took 0:0" in out


def test_progress_bars_are_off_under_the_notebook_runner(monkeypatch) -> None:  # noqa: ANN001
    """`reproduce` sets $ADLIB_NO_BARS: a widget bar would stay frozen at 0 % in the executed copy."""
    from adlib.runtime import NO_BARS_ENV, progress_bar

    monkeypatch.delenv(NO_BARS_ENV, raising=False)
    assert not progress_bar(range(3), disable=False).disable
    monkeypatch.setenv(NO_BARS_ENV, "1")
    assert progress_bar(range(3), disable=False).disable
    assert list(progress_bar(range(3))) == [0, 1, 2]  # still iterates
