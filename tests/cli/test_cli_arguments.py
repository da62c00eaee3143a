"""Issue 9, cases 2, 8 and 9: arguments are checked before any work (one line, exit 2), user paths are
resolved where the command ran, and bench never writes another profile's file; issue 10: help texts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from adlib.cli import bench as bench_module
from adlib.cli import bench_scan as bench_scan_module
from adlib.cli import main
from adlib.cli.reproduce import reproduce
from adlib.data import ADCategory, ADSplit
from adlib.data.shared import run_data_root
from adlib.methods import METHODS

from ..helpers import PARAMETERS, write_notebook


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"python -m adlib {command}: error: "), err
    return err.strip().split("error: ", 1)[1]


def data_root(folder: Path, sets: tuple[str, ...] = ("kolektorsdd/commutator",)) -> Path:
    for s in sets:
        (folder / s / "train" / "good").mkdir(parents=True)
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "99"], r"--only \['99'\]: no such notebook in .* \(have \['00'"),
        (["--only", ""], r"--only '': names no notebook; give numbers such as 00,01"),
        (["--only", ",,"], r"--only ',,': names no notebook"),
        (["--kernel", "nope"], r"--kernel 'nope': no such Jupyter kernel \(installed: "),
        (["--device", "gpu"], r"--device gpu: not a torch device \(use auto, cpu, cuda or cuda:N\)"),
        (["--cell-timeout", "0"], r"--cell-timeout 0: must be at least 1 second"),
        (["--inactivity-timeout", "-1"], r"--inactivity-timeout -1.0: must be >= 0"),
    ],
)
def test_reproduce_arguments_are_checked_before_any_kernel(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reproduce", *args]) == 2
    assert re.fullmatch(message + ".*", one_error_line(capsys, "reproduce"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_a_kernel_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--device", "cuda"]) == 2
    assert (
        one_error_line(capsys, "reproduce")
        == "--device cuda: torch sees no CUDA device on this machine (use auto or cpu)"
    )


def test_a_missing_empty_or_wrong_level_data_root_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADLIB_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--data-root", "nope"]) == 2
    assert one_error_line(capsys, "reproduce") == f"--data-root nope: no such folder ({tmp_path / 'nope'})"
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "--data-root", "empty"]) == 2
    assert one_error_line(capsys, "reproduce") == (
        f"--data-root {tmp_path / 'empty'}: holds no data set (expected <dataset>/<category>/train/good/)"
    )
    data_root(tmp_path / "data")
    assert main(["reproduce", "--data-root", "data/kolektorsdd"]) == 2
    assert one_error_line(capsys, "reproduce").endswith(
        f"kolektorsdd looks like one data set: give its parent {tmp_path / 'data'})"
    )
    monkeypatch.setenv("ADLIB_DATA_ROOT", "missing")
    assert main(["reproduce"]) == 2
    assert one_error_line(capsys, "reproduce") == f"ADLIB_DATA_ROOT missing: no such folder ({tmp_path / 'missing'})"


def test_user_paths_are_resolved_where_the_command_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = data_root(tmp_path / "caller" / "data")
    monkeypatch.chdir(tmp_path / "caller")
    monkeypatch.setenv("HOME", str(tmp_path / "caller"))
    assert run_data_root("~/data") == data.resolve()
    monkeypatch.setenv("ADLIB_DATA_ROOT", "data")  # relative: to the caller's folder, not notebooks/
    assert run_data_root(None) == data.resolve()
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_root.ipynb", "print('root', DATA_ROOT)", parameters=PARAMETERS)
    [done] = reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder)
    assert f"root {data.resolve()}" in done.read_text()  # the notebook got the absolute path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeat", "0"], "--repeat 0: must be at least 1"),
        (["--methods", "foo,patchcore"], f"--methods: unknown 'foo'; choose from {', '.join(METHODS)}"),
        (["--methods", ","], f"--methods '': names no method; choose from {', '.join(METHODS)}"),
        (["--real", "kolektorsdd"], "--real 'kolektorsdd': expected DATASET/CATEGORY, e.g. kolektorsdd/commutator"),
        (["--coreset-ratio", "0"], "--coreset-ratio 0.0: must be in (0, 1]"),
        (["--device", "gpu"], "--device gpu: not a torch device (use auto, cpu, cuda or cuda:N)"),
    ],
)
def test_bench_arguments_are_checked_before_any_work(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *args]) == 2
    assert one_error_line(capsys, "bench") == message


def test_bench_real_must_exist_under_the_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = data_root(tmp_path / "data")
    assert main(["bench", "--data-root", str(root), "--real", "kolektorsdd/nope"]) == 2
    assert one_error_line(capsys, "bench") == (
        f"--real kolektorsdd/nope: not found under {root} (have kolektorsdd/commutator)"
    )


def test_bench_files_carry_the_profile_and_never_overwrite_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_module, "REPO_ROOT", tmp_path)
    assert bench_module.bench_path("ci") == tmp_path / "results" / "bench_ci.json"
    assert bench_module.bench_path("full", "kolektorsdd/commutator").name == "bench_full_kolektorsdd_commutator.json"
    full = tmp_path / "results" / "bench.json"
    full.parent.mkdir()
    full.write_text(json.dumps({"profile": "full", "metrics": {}}))
    assert main(["bench", "--out", str(full)]) == 2
    assert one_error_line(capsys, "bench") == (
        f"--out {full}: holds the full profile's results; this run is ci (give another file)"
    )

    # a whole (tiny) ci run writes bench_ci.json and leaves the full profile's file alone
    rng = np.random.default_rng(0)
    train = ADSplit(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.zeros(4, np.int64), None,
                    ["good"] * 4, list("abcd"))  # fmt: skip
    masks = np.zeros((4, 32, 32), bool)
    masks[2:, 8:16, 8:16] = True
    test = ADSplit(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.array([0, 0, 1, 1]), masks,
                   ["good", "good", "x", "x"], list("efgh"))  # fmt: skip
    tiny = ADCategory("demo", "tiny", train, test, "test")
    monkeypatch.setattr(bench_module, "_category", lambda prof, real, root: tiny)
    monkeypatch.setattr(bench_module, "bench_metrics", lambda repeat: {"aupro_s": 0.0, "all_metrics_s": 0.0,
                                                                       "n_maps": 0, "map_size": 0})  # fmt: skip
    assert main(["bench", "--methods", "patchcore", "--repeat", "1", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "results" / "bench_ci.json").read_text())
    assert report["profile"] == "ci" and list(report["methods"]) == ["patchcore"]
    assert json.loads(full.read_text())["profile"] == "full"


def test_help_shows_defaults_profiles_and_method_names(capsys: pytest.CaptureFixture[str]) -> None:
    texts = {}
    for command in ("reproduce", "bench"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        text = texts[command] = " ".join(capsys.readouterr().out.split())
        assert "(default: ci)" in text and "ci: 128 px" in text and "full: 256 px" in text
        assert "(default: auto)" in text and "(default: None)" not in text
        assert "(default: False)" not in text  # flags say nothing about their off state
    assert "the one seed of the run (default: 0)" in texts["reproduce"]  # 0 == False must not hide it
    assert f"subset of: {', '.join(METHODS)} (default: all)" in text  # bench


def test_bench_scan_flag_reaches_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--scan` adds the selective-scan benchmark; without it, bench runs without."""
    seen: list[bool] = []
    monkeypatch.setattr(bench_module, "bench", lambda scan=False, **kw: seen.append(scan))
    assert main(["bench", "--scan", "--methods", "patchcore"]) == 0
    assert main(["bench", "--methods", "patchcore"]) == 0
    assert seen == [True, False]


def test_bench_scan_help_and_bad_counts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m adlib.cli.bench_scan`: each option says what it is and its default; counts below 1 are refused."""
    with pytest.raises(SystemExit) as info:
        bench_scan_module.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the best is kept (default: 5)" in text and "torch CPU threads (default: 1)" in text
    for argv, name in ((["--repeat", "0"], "--repeat"), (["--threads", "-1"], "--threads")):
        with pytest.raises(SystemExit) as info:
            bench_scan_module.main(argv)
        assert info.value.code == 2 and f"{name} must be a whole number >= 1" in capsys.readouterr().err
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(bench_scan_module, "bench_scan", lambda repeat, threads: seen.append((repeat, threads)))
    assert bench_scan_module.main(["--repeat", "2"]) == 0 and seen == [(2, 1)]
