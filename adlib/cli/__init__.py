"""Command-line tools: `python -m adlib reproduce` (papermill runner), `python -m adlib train` (the model cache,
resumable, in shards or under torchrun) and `python -m adlib bench`.

Profiles: `ci` is tiny (128 px, a few dozen images per class, about 9 minutes for all notebooks on a
2-core CPU); `full` is the real experiment (256 px, hundreds of images per class; a GPU helps, a CPU
gets there slower).

Every argument is checked before any work starts (no kernel, no backbone): a bad one ends the
command with one line, `python -m adlib <command>: error: ...`, and exit status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .reproduce import INACTIVITY_TIMEOUT

PROFILES_HELP = (
    "ci: 128 px, a few dozen images per class, about 9 min for all notebooks on a 2-core CPU; "
    "full: 256 px, hundreds of images per class, the real experiment (a GPU helps)"
)


class _Formatter(argparse.HelpFormatter):
    """Each option's default after its help (unless the help says it); descriptions wrapped by paragraph."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is argparse.SUPPRESS or action.default is False
        if "(default" not in text and not hidden:  # identity: a default of 0 (== False) is still shown
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
        return "\n\n".join(super(_Formatter, self)._fill_text(p, width, indent) for p in paragraphs)


class ArgumentError(ValueError):
    """A command-line argument that cannot work: the message names it and says what was expected."""


def _parser() -> argparse.ArgumentParser:
    from ..methods import METHODS

    parser = argparse.ArgumentParser(prog="python -m adlib", description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser(
        "reproduce",
        help="run the notebooks with papermill, regenerate tables and figures",
        description="Run the numbered notebooks in order with papermill. Tables go to <out-dir>/tables/, figures "
        "to <figures-dir>/, executed copies to <out-dir>/executed/<profile>/ (a failed run keeps the last good "
        "copy and writes <name>.FAILED.ipynb beside it). Files an earlier run of the same notebook and profile "
        "wrote and this run did not are removed.",
        formatter_class=_Formatter,
    )
    rep.add_argument("--profile", choices=["ci", "full"], default="ci", help=f"run size; {PROFILES_HELP}")
    rep.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01 (default: all)")
    rep.add_argument(
        "--data-root",
        default=None,
        help="folder of real data sets, <dataset>/<category>/train/good/...; relative to the current folder, "
        "~ expanded (default: $ADLIB_DATA_ROOT, else ../shared/data if present)",
    )
    rep.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    rep.add_argument("--seed", type=int, default=0, help="the one seed of the run")
    rep.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's own)")
    rep.add_argument(
        "--cell-timeout",
        type=int,
        default=None,
        help="fail a cell that runs longer than this many seconds (default: no limit)",
    )
    rep.add_argument(
        "--inactivity-timeout",
        type=float,
        default=INACTIVITY_TIMEOUT,
        help="fail a cell (and retry its notebook once) after this many seconds with no output, "
        "no reply and no kernel CPU; 0 turns it off",
    )
    rep.add_argument("--out-dir", type=Path, default=None, help="where tables and executed copies go (results/)")
    rep.add_argument("--figures-dir", type=Path, default=None, help="where figures go (figures/ beside --out-dir)")
    rep.add_argument("--notebook-dir", type=Path, default=None, help="folder of NN_name.ipynb files (notebooks/)")

    names = ", ".join(METHODS)
    ben = sub.add_parser(
        "bench",
        help="print throughput, metric timings and peak memory; write results/bench_<profile>.json",
        description="Speed and memory on this machine: AUPRO and all metrics on 500 maps, the backbone alone, "
        f"and each method's fit and full inference ({names}). Writes results/bench_<profile>.json, or "
        "results/bench_<profile>_<dataset>_<category>.json with --real; never another profile's file.",
        formatter_class=_Formatter,
    )
    ben.add_argument("--profile", choices=["ci", "full"], default="ci", help=f"sizes and budgets; {PROFILES_HELP}")
    ben.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ben.add_argument(
        "--real", default=None, help="DATASET/CATEGORY of a real set, e.g. kolektorsdd/commutator (default: built-in)"
    )
    ben.add_argument(
        "--data-root", default=None, help="folder of real data sets (default: $ADLIB_DATA_ROOT, else ../shared/data)"
    )
    ben.add_argument("--methods", default=None, help=f"comma-separated subset of: {names} (default: all)")
    ben.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept (at least 1)")
    ben.add_argument("--coreset-ratio", type=float, default=None, help="PatchCore ratio (default: the profile's)")
    ben.add_argument(
        "--out", type=Path, default=None, help="JSON file to write (default: results/bench_<profile>[_<real>].json)"
    )
    ben.add_argument(
        "--scan",
        action="store_true",
        help="add the selective-scan benchmark (sequential, chunked, mambapy if installed)",
    )
    tra = sub.add_parser(
        "train",
        help="train one model, or a notebook's grid of models, into the model cache (resumable; torchrun for DDP)",
        description="Train what a notebook needs into the model cache, so that the notebook then only loads and "
        "scores. `train --notebook 07` trains every model of notebook 07's grid (adlib.grids) that the cache lacks; "
        "`--shard i/n` takes every n-th of them from the i-th (0-based), so that n processes (two on a 2-core CPU, "
        "one per GPU, a Slurm job array with --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) fill the cache "
        "side by side. `train dvad` trains notebook 07's default DVAD of --seed, `train anomaly_moe` notebook 08's "
        "default AnomalyMoE.\n\nEvery training writes checkpoints beside its cache entry every --checkpoint-every "
        "steps and on Ctrl-C or SIGTERM; the same command started again goes on from there. Under `torchrun "
        "--nproc_per_node N -m adlib train ...` each model is trained by N processes (NCCL on GPUs, gloo on CPUs), "
        "the global batch split over them, rank 0 writing the cache entry.",
        formatter_class=_Formatter,
    )
    tra.add_argument("method", nargs="?", choices=["dvad", "anomaly_moe"], help="one default model (default: none)")
    tra.add_argument("--notebook", default=None, help="NN: train the grid of notebook NN (06, 07 or 08)")
    tra.add_argument("--profile", choices=["ci", "full"], default="ci", help=f"run size; {PROFILES_HELP}")
    tra.add_argument("--shard", default="0/1", help="i/n: this process trains jobs i, i + n, ... of the grid")
    tra.add_argument(
        "--seed", type=int, default=0, help="the run seed, as the notebooks' SEED (seeds SEED, SEED + 1, ...)"
    )
    tra.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    tra.add_argument(
        "--data-root", default=None, help="folder of real data sets (default: $ADLIB_DATA_ROOT, else ../shared/data)"
    )
    tra.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between checkpoints")
    tra.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    tra.add_argument("--list", action="store_true", help="list the jobs and whether each is cached; train nothing")
    tra.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


# ----------------------------------------------------------------------------- checks
def check_reproduce_args(args: argparse.Namespace) -> None:
    """Check and normalise `reproduce`'s arguments in place; ArgumentError on the first bad one."""
    from ..data.shared import run_data_root
    from .reproduce import NOTEBOOK_DIR, check_device, check_kernel, list_notebooks

    try:
        args.only_list = None if args.only is None else args.only.split(",")
        list_notebooks(args.only_list, args.notebook_dir or NOTEBOOK_DIR)
        check_device(args.device)
        check_kernel(args.kernel)
        root = run_data_root(args.data_root)
    except (ValueError, FileNotFoundError) as err:
        raise ArgumentError(str(err)) from None
    args.data_root = str(root) if root is not None else None
    if args.cell_timeout is not None and args.cell_timeout < 1:
        raise ArgumentError(f"--cell-timeout {args.cell_timeout}: must be at least 1 second")
    if args.inactivity_timeout < 0:
        raise ArgumentError(f"--inactivity-timeout {args.inactivity_timeout}: must be >= 0 (0 turns it off)")


def main(argv: list[str] | None = None) -> int:
    """`python -m adlib ...`: returns the exit status (2 for a bad argument, as argparse)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except KeyboardInterrupt:  # while checking or benchmarking (reproduce reports its own)
        print("interrupted", file=sys.stderr)
        return 130


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "reproduce":
            check_reproduce_args(args)
        elif args.command == "train":
            from .train import check_train_args

            check_train_args(args)
        else:
            from .bench import check_bench_args

            args.bench = check_bench_args(
                args.profile,
                args.device,
                args.real,
                args.data_root,
                args.methods,
                args.repeat,
                args.out,
                args.coreset_ratio,
            )
    except (ArgumentError, ValueError, FileNotFoundError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.command == "reproduce":
        from .reproduce import main_reproduce

        return main_reproduce(args)
    if args.command == "train":
        from .train import main_train

        return main_train(args)
    from .bench import bench

    bench(**args.bench, scan=args.scan)
    return 0
