"""The papermill runner and the `python -m adlib` command line: errors name the notebook and the cell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from adlib.cli.reproduce import NotebookFailed, list_notebooks, reproduce
from adlib.runtime import REPO_ROOT

from ..helpers import PARAMETERS, write_notebook

# ---------------------------------------------------------------------------------------------
# adlib.config
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# adlib.nb.setup
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# adlib.cli.reproduce
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_notebooks(tmp_path: Path) -> Path:
    """notebooks/00_intro.ipynb and notebooks/01_method.ipynb, empty but valid; plus a non-numbered one."""
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_intro.ipynb")
    write_notebook(folder / "01_method.ipynb")
    write_notebook(folder / "scratch.ipynb")
    return folder


def test_list_notebooks(two_notebooks: Path) -> None:
    assert [p.name for p in list_notebooks(notebook_dir=two_notebooks)] == ["00_intro.ipynb", "01_method.ipynb"]
    assert [p.name for p in list_notebooks(["0"], two_notebooks)] == ["00_intro.ipynb"]  # zero-padded
    assert [p.name for p in list_notebooks(["01", " 0"], two_notebooks)] == ["00_intro.ipynb", "01_method.ipynb"]


def test_list_notebooks_names_an_unknown_number(two_notebooks: Path) -> None:
    with pytest.raises(ValueError, match=r"--only \['99'\]: no such notebook"):
        list_notebooks(["1", "99"], two_notebooks)


def test_reproduce_names_the_failing_notebook_and_cell(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_fails.ipynb", "x = 1", 'raise ValueError("boom")', parameters=PARAMETERS)
    with pytest.raises(NotebookFailed, match=r"00_fails\.ipynb failed at cell \d+ .*ValueError: boom") as info:
        reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder)
    assert "raise ValueError" in str(info.value)  # the first line of the failing cell
    executed = tmp_path / "results" / "executed" / "ci"
    assert (executed / "00_fails.FAILED.ipynb").is_file()  # kept for inspection, under a name that says so
    assert "00_fails.FAILED.ipynb" in str(info.value)
    assert not (executed / "00_fails.ipynb").exists()  # never passed off as a good executed copy


def test_reproduce_injects_the_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "notebooks"
    source = "import os\nprint(f'profile={PROFILE} seed={SEED} bars off={os.environ.get(\"ADLIB_NO_BARS\")}')"
    write_notebook(folder / "00_ok.ipynb", source, parameters=PARAMETERS)
    write_notebook(folder / "01_other.ipynb", 'raise ValueError("must not run")', parameters=PARAMETERS)
    out = tmp_path / "results"
    done = reproduce("ci", only=["0"], seed=7, out_dir=out, kernel="python3", notebook_dir=folder)
    assert done == [out / "executed" / "ci" / "00_ok.ipynb"]
    nb = nbformat.read(done[0], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'PROFILE = "ci"' in injected[0].source and f'OUT_DIR = "{out.resolve()}"' in injected[0].source
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "profile=ci seed=7 bars off=1" in printed  # the kernel's progress bars are off (adlib.runtime)


def test_reproduce_accepts_out_dir_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    def fake_execute(source: str, target: str, **kwargs: object) -> None:  # no kernel: only the bookkeeping
        Path(target).write_text(Path(source).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_ok.ipynb", "x = 1", parameters=PARAMETERS)
    done = reproduce("ci", out_dir=tmp_path / "results", notebook_dir=folder)
    assert done == [tmp_path / "results" / "executed" / "ci" / "00_ok.ipynb"]


# ---------------------------------------------------------------------------------------------
# python -m adlib
# ---------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adlib", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def test_cli_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "reproduce" in result.stdout and "bench" in result.stdout


def test_cli_rejects_a_bad_profile() -> None:
    result = run_cli("reproduce", "--profile", "bogus")
    assert result.returncode != 0
    assert "bogus" in result.stderr


def test_two_runners_sharing_run_info_keep_each_others_entries(tmp_path: Path) -> None:
    """Two `reproduce` processes on one executed folder: the later writer keeps the earlier one's new entry."""
    from adlib.cli.runinfo import read_run_info, record_entry

    path = tmp_path / "RUN_INFO.json"
    record_entry(path, "00_a.ipynb", {"seconds": 1.0})
    stale_view = read_run_info(path)  # what a second process read when it started
    record_entry(path, "01_b.ipynb", {"seconds": 2.0})  # the first process finishes another notebook
    assert "01_b.ipynb" not in stale_view
    info = record_entry(path, "02_c.ipynb", {"seconds": 3.0})  # the second process records its own
    assert sorted(info) == ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]
    assert read_run_info(path) == info
