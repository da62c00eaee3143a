"""Issue 8: every committed executed copy was produced from the notebook as it is now.

The runner records a hash of each notebook's source (cells' types and sources; not outputs, ids or
metadata) in RUN_INFO.json. A copy whose entry has no hash, or another hash, is stale: rerun
`python -m adlib reproduce --profile full --only NN`. (The copies made before the hash existed were
removed; their figures are in figures/before/.)
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from adlib.cli.reproduce import NOTEBOOK_DIR
from adlib.cli.runinfo import RUN_INFO, notebook_hash
from adlib.runtime import REPO_ROOT

from ..helpers import PARAMETERS, write_notebook

EXECUTED = REPO_ROOT / "results" / "executed" / "full"
COPIES = sorted(p for p in EXECUTED.glob("[0-9][0-9]_*.ipynb") if "." not in p.stem)  # not *.FAILED.ipynb


@pytest.mark.parametrize("copy", COPIES, ids=[p.stem for p in COPIES])
def test_committed_executed_copy_matches_its_notebook(copy: Path) -> None:
    info = json.loads((EXECUTED / RUN_INFO).read_text())
    assert copy.name in info, f"{EXECUTED / RUN_INFO} has no entry for {copy.name}"
    recorded = info[copy.name].get("source_sha256")
    assert recorded is not None, f"{copy.name} has no source hash in {RUN_INFO}: it predates the record; rerun it"
    notebook = NOTEBOOK_DIR / copy.name
    assert notebook.is_file(), f"{copy} has no notebook {notebook}"
    assert recorded == notebook_hash(notebook), (
        f"{copy} is stale: {notebook.name} changed since it ran; "
        f"rerun python -m adlib reproduce --profile full --only {copy.name[:2]}"
    )


def test_notebook_hash_sees_sources_only(tmp_path: Path) -> None:
    book = write_notebook(tmp_path / "00_a.ipynb", "x = 1", "print(x)", parameters=PARAMETERS)
    before = notebook_hash(book)
    nb = nbformat.read(book, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]  # outputs and metadata: same hash
    nb.cells[1].metadata["collapsed"] = True
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.cells.insert(1, nbformat.v4.new_code_cell('PROFILE = "ci"', metadata={"tags": ["injected-parameters"]}))
    nbformat.write(nb, book)
    assert notebook_hash(book) == before
    nb.cells[2].source = "x = 2"  # a source change: another hash
    nbformat.write(nb, book)
    assert notebook_hash(book) != before


def test_the_recorded_hash_names_the_source_that_ran_not_a_later_edit(tmp_path: Path) -> None:
    """A notebook edited while it runs (here: by its own cell) is recorded with the source that ran."""
    from adlib.cli.reproduce import reproduce

    edit = (
        "import json, pathlib\n"
        "p = pathlib.Path('00_edited.ipynb'); nb = json.loads(p.read_text())\n"
        "nb['cells'][-1]['source'] = 'x = 2'; p.write_text(json.dumps(nb))"
    )
    book = write_notebook(tmp_path / "nb" / "00_edited.ipynb", edit, "x = 1", parameters=PARAMETERS)
    ran = notebook_hash(book)
    [executed] = reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=book.parent)
    assert notebook_hash(book) != ran  # the cell did edit its notebook
    info = json.loads((executed.parent / RUN_INFO).read_text())
    assert info[book.name]["source_sha256"] == ran == notebook_hash(executed)
