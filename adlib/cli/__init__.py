"""Command-line tools: `python -m adlib reproduce` (papermill runner) and `python -m adlib bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .reproduce import INACTIVITY_TIMEOUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run the notebooks with papermill, regenerate tables and figures")
    rep.add_argument("--profile", choices=["ci", "full"], default="ci")
    rep.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,01")
    rep.add_argument("--data-root", help="folder of real data sets (default: ../shared/data if present)")
    rep.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    rep.add_argument("--cell-timeout", type=int, default=None, help="fail a cell that runs longer (seconds)")
    rep.add_argument(
        "--inactivity-timeout",
        type=float,
        default=INACTIVITY_TIMEOUT,
        help="fail a cell (and retry its notebook once) after this many seconds with no output, "
        "no reply and no kernel CPU; 0 turns it off (default: %(default)s)",
    )

    ben = sub.add_parser("bench", help="print throughput, metric timings and peak memory; write results/bench.json")
    ben.add_argument("--profile", choices=["ci", "full"], default="ci")
    ben.add_argument("--device", default="auto")
    ben.add_argument("--real", help="a real category such as kolektorsdd/commutator instead of built-in data")
    ben.add_argument("--data-root")
    ben.add_argument("--methods", help="comma-separated subset of the methods")
    ben.add_argument("--repeat", type=int, default=3)
    ben.add_argument("--coreset-ratio", type=float, default=None, help="override the profile's PatchCore ratio")
    ben.add_argument("--out", default=None, help="where to write the JSON (default results/bench.json)")

    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from .reproduce import main_reproduce

        return main_reproduce(args)
    from .bench import bench

    bench(
        args.profile,
        args.device,
        args.real,
        args.data_root,
        args.methods.split(",") if args.methods else None,
        args.repeat,
        Path(args.out) if args.out else None,
        args.coreset_ratio,
    )
    return 0
