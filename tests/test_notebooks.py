"""Papermill smoke runs: every numbered notebook runs end to end at PROFILE="ci".

Outputs (executed copies, tables, figures) go to a temporary folder, so a test run never touches
results/ or figures/. The feature cache is shared by the notebooks of one session, as in a real run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adlib.cli.reproduce import list_notebooks, reproduce

NOTEBOOKS = list_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_ci_profile(
    notebook: Path, tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADLIB_CACHE", str(shared_cache))
    out, figures = tmp_path / "results", tmp_path / "figures"
    [executed] = reproduce("ci", only=[notebook.name[:2]], out_dir=out, figures_dir=figures, cell_timeout=900)
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    tables = sorted((out / "tables").glob(f"{notebook.name[:2]}_*_ci.csv"))
    assert tables, f"{notebook.name} wrote no table"
    assert all(t.with_suffix(".md").is_file() for t in tables)
    assert sorted(figures.glob(f"{notebook.name[:2]}_*_ci.png")), f"{notebook.name} wrote no figure"


def test_notebooks_are_committed_without_outputs() -> None:
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells), f"{notebook.name} holds outputs"
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), notebook.name
