"""Issue 9, cases 3 and 10: every output file belongs to the run that wrote it, and metric tables of two
runs with one seed are byte-identical (timings are kept in their own files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adlib.cli.reproduce import reproduce
from adlib.cli.runinfo import RUN_INFO

from ..helpers import PARAMETERS, write_notebook

SETUP = (
    "import os, time\n"
    "import pandas as pd\n"
    "from adlib.nb import setup\n"
    "run = setup(PROFILE=PROFILE, DEVICE='cpu', DATA_ROOT=DATA_ROOT, SEED=SEED, OUT_DIR=OUT_DIR,\n"
    "            FIGURES_DIR=FIGURES_DIR, notebook=NB, verbose=False)"
)
WRITES = (
    "run.save_table(pd.DataFrame({'set': ['a'], 'AUROC': [0.9]}), 'main')\n"
    "if os.environ.get('ADLIB_TEST_REAL') == '1':\n"
    "    run.save_table(pd.DataFrame({'set': ['real'], 'AUROC': [0.8]}), 'real_overview')\n"
    "    import matplotlib.pyplot as plt\n"
    "    fig = plt.figure(figsize=(1, 1)); run.save_figure(fig, 'real_examples'); plt.close(fig)"
)


def notebooks(folder: Path) -> Path:
    for nb in ("00", "01"):
        write_notebook(folder / f"{nb}_book.ipynb", f"NB = {nb!r}\n" + SETUP, WRITES, parameters=PARAMETERS)
    return folder


def test_files_an_earlier_run_wrote_and_this_one_did_not_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out, figures = notebooks(tmp_path / "notebooks"), tmp_path / "results", tmp_path / "figures"
    monkeypatch.setenv("ADLIB_TEST_REAL", "1")  # the kernels inherit it: "real data present"
    reproduce("ci", out_dir=out, kernel="python3", notebook_dir=folder)
    real = [out / "tables" / f"{nb}_real_overview_ci.{ext}" for nb in ("00", "01") for ext in ("csv", "md")]
    assert all(p.is_file() for p in real) and (figures / "00_real_examples_ci.png").is_file()
    info = json.loads((out / "executed" / "ci" / RUN_INFO).read_text())
    assert "results/tables/00_real_overview_ci.csv" in info["00_book.ipynb"]["outputs"]  # the manifest
    assert "figures/00_real_examples_ci.png" in info["00_book.ipynb"]["outputs"]

    monkeypatch.setenv("ADLIB_TEST_REAL", "0")  # a run without the real data, of notebook 00 only
    reproduce("ci", only=["00"], out_dir=out, kernel="python3", notebook_dir=folder)
    assert not (out / "tables" / "00_real_overview_ci.csv").exists()
    assert not (out / "tables" / "00_real_overview_ci.md").exists()
    assert not (figures / "00_real_examples_ci.png").exists()
    assert (out / "tables" / "00_main_ci.csv").is_file()  # what this run wrote stays
    assert (out / "tables" / "01_real_overview_ci.csv").is_file()  # notebook 01 did not run: untouched
    assert (figures / "01_real_examples_ci.png").is_file()
    info = json.loads((out / "executed" / "ci" / RUN_INFO).read_text())
    assert info["00_book.ipynb"]["outputs"] == ["results/tables/00_main_ci.csv", "results/tables/00_main_ci.md"]


def test_files_of_a_run_before_manifests_existed_are_removed_by_name(tmp_path: Path) -> None:
    folder, out = notebooks(tmp_path / "notebooks"), tmp_path / "results"
    (out / "tables").mkdir(parents=True)
    stale = out / "tables" / "00_real_overview_ci.md"
    stale.write_text("six data sets this run did not see")
    other_profile = out / "tables" / "00_real_overview_full.md"
    other_profile.write_text("the full profile's table")
    reproduce("ci", only=["00"], out_dir=out, kernel="python3", notebook_dir=folder)
    assert not stale.exists() and other_profile.is_file()  # a run never touches another profile's files


SAVES = (
    "import matplotlib.pyplot as plt, numpy as np\n"
    "t0 = time.perf_counter()\n"
    "table = pd.DataFrame({'method': ['patchcore'], 'I-AUROC': [0.91234], 'fit s': [time.perf_counter() - t0]})\n"
    "run.save_table(table, 'patchcore', timings=['fit s'])\n"
    "fig, ax = plt.subplots(figsize=(2, 2)); ax.imshow(np.random.default_rng(SEED).random((8, 8)))\n"
    "run.save_figure(fig, 'maps'); plt.close(fig)"
)


def test_two_runs_with_one_seed_write_byte_identical_tables_and_figures(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "01_book.ipynb", "NB = '01'\n" + SETUP, SAVES, parameters=PARAMETERS)
    runs = [tmp_path / "run1", tmp_path / "run2"]
    for run in runs:
        reproduce("ci", out_dir=run / "results", kernel="python3", notebook_dir=folder)
    files = ["results/tables/01_patchcore_ci.csv", "results/tables/01_patchcore_ci.md", "figures/01_maps_ci.png"]
    for name in files:
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    assert (runs[0] / "results/tables/01_patchcore_ci.csv").read_text() == "method,I-AUROC\npatchcore,0.9123\n"
    timings = (runs[0] / "results/tables/01_patchcore_timings_ci.csv").read_text().splitlines()
    assert timings[0] == "method,fit s" and timings[1].startswith("patchcore,")  # the wall clock, on its own
