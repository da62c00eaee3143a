"""Issue 9, cases 4, 6 and 7: a failed or interrupted run keeps the last good executed copy, failures outside
a cell show their cause, RUN_INFO.json survives damage, Ctrl-C and SIGTERM end with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adlib.cli import main
from adlib.cli.reproduce import NotebookFailed, ReproduceError, reproduce
from adlib.cli.runinfo import RUN_INFO, notebook_hash
from adlib.runtime import REPO_ROOT

from ..helpers import PARAMETERS, write_notebook

FLAKY = "import os\nif os.environ.get('ADLIB_TEST_FAIL') == '1':\n    raise RuntimeError('asked to fail')"


def test_a_failed_run_keeps_the_last_good_copy_and_its_run_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "results"
    book = write_notebook(folder / "00_flaky.ipynb", FLAKY, parameters=PARAMETERS)
    executed = out / "executed" / "ci"
    [good] = reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    good_bytes, info_bytes = good.read_bytes(), (executed / RUN_INFO).read_bytes()
    assert json.loads(info_bytes)["00_flaky.ipynb"]["source_sha256"] == notebook_hash(book)

    monkeypatch.setenv("ADLIB_TEST_FAIL", "1")
    with pytest.raises(NotebookFailed, match=r"00_flaky\.ipynb failed at cell 2 .*RuntimeError: asked to fail"):
        reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    assert good.read_bytes() == good_bytes  # the last good copy, untouched
    assert (executed / RUN_INFO).read_bytes() == info_bytes  # still describes that copy
    failed = executed / "00_flaky.FAILED.ipynb"
    assert "asked to fail" in failed.read_text()
    assert not list(executed.glob("*.incomplete.ipynb"))

    monkeypatch.setenv("ADLIB_TEST_FAIL", "0")
    reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    assert not failed.exists()  # a success replaces the failure


def test_a_kernel_that_dies_outside_any_error_cell_shows_the_cause(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_dies.ipynb", "import os\nos._exit(1)", parameters=PARAMETERS)
    with pytest.raises(NotebookFailed) as info:
        reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder, retries=0)
    first = str(info.value).splitlines()[0]
    assert first.startswith("00_dies.ipynb failed at cell 2: DeadKernelError") and "unknown cell" not in first


def test_an_unknown_kernel_is_named_before_anything_runs(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_ok.ipynb", "x = 1", parameters=PARAMETERS)
    with pytest.raises(ValueError, match=r"^--kernel 'nope': no such Jupyter kernel \(installed: .*python3"):
        reproduce("ci", out_dir=tmp_path / "results", kernel="nope", notebook_dir=folder)
    assert not (tmp_path / "results").exists()


def test_an_unwritable_results_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "results"
    write_notebook(folder / "00_ok.ipynb", "x = 1", parameters=PARAMETERS)
    out.mkdir()
    (out / "executed").write_text("a file where the folder should be")
    with pytest.raises(ReproduceError, match=r"results/executed/ci: cannot create the folder \(\w+Error"):
        reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    code = main(["reproduce", "--notebook-dir", str(folder), "--out-dir", str(out), "--kernel", "python3"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "cannot create the folder" in err and err.count("\n") == 1


def test_a_truncated_run_info_is_set_aside_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "results"
    write_notebook(folder / "00_ok.ipynb", "x = 1", parameters=PARAMETERS)
    info = out / "executed" / "ci" / RUN_INFO
    info.parent.mkdir(parents=True)
    info.write_text('{"00_ok.ipynb": {"profile": "ci", "seco')
    reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    assert f"warning: {info}: not valid JSON" in capsys.readouterr().err
    assert json.loads(info.read_text())["00_ok.ipynb"]["profile"] == "ci"
    assert info.with_name("RUN_INFO.json.corrupt").read_text().startswith('{"00_ok')
    assert not list(info.parent.glob(".RUN_INFO.json.tmp*"))  # written atomically


def start_runner(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """`python -m adlib reproduce` on a notebook whose cell 3 sleeps; returns once that cell runs."""
    folder, out = tmp_path / "notebooks", tmp_path / "results"
    pid_file = tmp_path / "kernel.pid"
    write_notebook(
        folder / "00_sleep.ipynb", f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))",
        "time.sleep(120)", parameters=PARAMETERS,
    )  # fmt: skip
    args = ["reproduce", "--notebook-dir", str(folder), "--out-dir", str(out), "--kernel", "python3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "adlib", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not pid_file.is_file() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # cell 3 has started
    return proc, out / "executed" / "ci", pid_file


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc")
@pytest.mark.parametrize(
    ("sig", "code", "verb"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_and_sigterm_end_with_one_line(tmp_path: Path, sig: int, code: int, verb: str) -> None:
    proc, executed, pid_file = start_runner(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err == f"{verb} at notebook 1 of 1 (00_sleep.ipynb), cell 3 (partial copy: 00_sleep.INTERRUPTED.ipynb)\n"
    assert gone(int(pid_file.read_text()))  # the kernel did not outlive the run
    assert (executed / "00_sleep.INTERRUPTED.ipynb").is_file() and not (executed / "00_sleep.ipynb").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals")
def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    proc, executed, pid_file = start_runner(tmp_path)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    assert (executed / "00_sleep.incomplete.ipynb").is_file() and not (executed / "00_sleep.ipynb").exists()
    assert gone(int(pid_file.read_text()), 30)  # the kernel notices its parent is gone
    write_notebook(tmp_path / "notebooks" / "00_sleep.ipynb", "x = 1", parameters=PARAMETERS)
    [done] = reproduce("ci", out_dir=executed.parent.parent, kernel="python3", notebook_dir=tmp_path / "notebooks")
    assert done.is_file() and sorted(p.name for p in executed.iterdir()) == ["00_sleep.ipynb", RUN_INFO]


def test_a_second_runner_leaves_another_notebooks_live_files_alone(tmp_path: Path) -> None:
    """Two runners share one executed folder (two notebooks on two cores): starting one must not delete the
    other's outputs log or partial copy. Deleting the log made the other's first outputs look stale at its end,
    and they were removed (found on a full-profile run of notebook 01 beside 02)."""
    executed = tmp_path / "results" / "executed" / "ci"
    executed.mkdir(parents=True)
    live_log = executed / ".00_other.outputs"
    live_log.write_text(f"{tmp_path / 'figures' / '00_early_ci.png'}\n")
    live_copy = executed / "00_other.incomplete.ipynb"
    live_copy.write_text("{}")
    own_leftover = executed / ".01_mine.outputs"  # of a killed run of this very notebook: removed
    own_leftover.write_text("/nowhere/01_gone_ci.png\n")
    write_notebook(tmp_path / "notebooks" / "01_mine.ipynb", "x = 1", parameters=PARAMETERS)
    reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=tmp_path / "notebooks")
    assert live_log.read_text() == f"{tmp_path / 'figures' / '00_early_ci.png'}\n" and live_copy.is_file()
    assert not own_leftover.exists()
