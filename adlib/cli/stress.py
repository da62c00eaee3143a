"""Stress test of the runner's hang: run the explorer cells of the notebooks many times, count hangs.

    python -m adlib.cli.stress --client stock --repeat 10            # nbclient as papermill uses it
    python -m adlib.cli.stress --client robust --repeat 10           # our engine's kernel manager
    python -m adlib.cli.stress --cpus 0 --busy 1 ...                 # one core, kept busy

Each notebook runs once at PROFILE="ci" (its parameters injected as papermill does), with every
explorer cell (a cell that calls ``widgets.interact`` or ``interactive``) repeated ``--repeat``
times in place, followed by ``--repeat`` copies of a minimal ``interact`` cell that draws an inline
figure (the case of issue 6). Explorer cells wait for their reply with a deadline of
``--hang-after`` seconds: jupyter_client's poll looks at the socket once more when its deadline
passes, so a lost wake-up (which without a deadline is a hang for ever) shows up as a cell that
took the whole deadline, and the run goes on. Such a cell counts as a hang. Other cells run without
a limit (they may legitimately take minutes on a busy core).
The kernel draws inline (``MPLBACKEND`` unset for it), as a user's ``reproduce`` does.
Prints one line per notebook and a total; ``--json`` writes the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MINIMAL_CELL = """\
import ipywidgets as widgets, matplotlib.pyplot as plt, numpy as np
def f(a=True, k=2):
    plt.figure(figsize=(3, 2)); plt.imshow(np.random.rand(64, 64)); plt.show()
    print("a", a, "k", k)
widgets.interact(f, a=True, k=widgets.IntSlider(value=2, min=1, max=4));"""


COUNTS = ("explorer_runs", "explorer_hangs", "minimal_runs", "minimal_hangs", "errors")


def is_explorer(source: str) -> bool:
    return "widgets.interact(" in source or "interactive(" in source


def stress_notebook(path: Path, repeat: int, client: str, hang_after: float, params: dict) -> dict:
    """Run one notebook with its explorer cells repeated; returns counts of explorer runs and hangs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from .engine import RobustKernelManager

    nb = parameterize_notebook(load_notebook_node(str(path)), params)
    cells, kind = [], []  # kind: "explorer", "minimal" or "" for every cell
    for cell in nb.cells:
        copies = repeat if cell.cell_type == "code" and is_explorer(cell.source) else 1
        for _ in range(copies):
            kind.append("explorer" if copies > 1 else "")
            cells.append(nbformat.from_dict(json.loads(json.dumps(cell))))
    for _ in range(repeat):
        cells.append(nbformat.v4.new_code_cell(MINIMAL_CELL))
        kind.append("minimal")
    nb.cells = cells
    kw = {"kernel_manager_class": RobustKernelManager} if client == "robust" else {}
    limits = {id(c): hang_after if k else None for c, k in zip(nb.cells, kind, strict=True)}  # only explorers
    runner = NotebookClient(
        nb, timeout_func=lambda cell: limits[id(cell)], resources={"metadata": {"path": str(path.parent)}}, **kw
    )
    counts = dict.fromkeys(COUNTS, 0)
    seconds: list[float] = []  # wall time of every explorer or minimal cell
    env_backup = os.environ.pop("MPLBACKEND", None)  # the kernel draws inline, as users' runs do
    start = time.perf_counter()
    try:
        with runner.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t0 = time.perf_counter()
                hung = False
                try:
                    runner.execute_cell(cell, index)
                except CellTimeoutError:
                    hung = True
                except Exception as err:  # noqa: BLE001 - counted and reported, the run goes on
                    counts["errors"] += 1
                    print(f"    {path.name} cell {index}: {type(err).__name__}: {str(err)[:200]}", flush=True)
                took = time.perf_counter() - t0
                if kind[index]:
                    counts[f"{kind[index]}_runs"] += 1
                    counts[f"{kind[index]}_hangs"] += hung or took >= hang_after
                    seconds.append(round(took, 2))
    finally:
        if env_backup is not None:
            os.environ["MPLBACKEND"] = env_backup
    longest = max(seconds, default=0.0)
    median = sorted(seconds)[len(seconds) // 2] if seconds else 0.0
    total = round(time.perf_counter() - start, 1)
    return {"notebook": path.name, **counts, "median_s": median, "max_s": longest, "seconds": total}


def main(argv: list[str] | None = None) -> int:
    from .reproduce import NOTEBOOK_DIR, list_notebooks

    parser = argparse.ArgumentParser(prog="python -m adlib.cli.stress", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--client",
        choices=["stock", "robust"],
        default="robust",
        help="stock: nbclient's default kernel manager (what papermill uses); robust: ours",
    )
    parser.add_argument("--only", default="00,01,02,03,04", help="notebook numbers (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=10, help="copies of each explorer cell (default: %(default)s)")
    parser.add_argument("--hang-after", type=float, default=60, help="seconds without reply = a hang (default: 60)")
    parser.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 0 (default: all)")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the run (default: 0)")
    parser.add_argument("--json", default=None, help="write the counts to this file")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # inherited by the kernel
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    params = {"PROFILE": "ci", "OUT_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / "adlib_stress")}
    params["FIGURES_DIR"] = params["OUT_DIR"] + "/figures"
    rows = []
    try:
        for path in list_notebooks(args.only.split(","), NOTEBOOK_DIR):
            row = stress_notebook(path, args.repeat, args.client, args.hang_after, params)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        for p in busy:
            p.kill()
    total = {k: sum(r[k] for r in rows) for k in COUNTS}
    summary = {"client": args.client, "cpus": args.cpus or "all", "busy": args.busy, **total, "notebooks": rows}
    print(
        f"client={args.client} cpus={summary['cpus']} busy={args.busy}: hangs in {total['explorer_hangs']} of "
        f"{total['explorer_runs']} explorer runs, in {total['minimal_hangs']} of {total['minimal_runs']} minimal "
        f"interact runs; {total['errors']} errors"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
