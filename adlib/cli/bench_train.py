"""Benchmark of the one training loop on this machine: one process against two under torchrun (gloo).

    python -m adlib.cli.bench_train                     # DVAD at the full profile's size, 20 timed steps
    python -m adlib.cli.bench_train --steps 40 --out results/bench_train_cpu.json

One DVAD (notebook 07's default config, batch 8) trains on random encoder maps of EfficientNet-Lite0's shapes at
256 px (``[N, 24, 64, 64]``, ``[N, 40, 32, 32]``, ``[N, 112, 16, 16]``): the loop's cost does not depend on the
values. Three ways side by side, each in a fresh process, after ``--warmup`` untimed steps:

- 1 process, 1 thread; 1 process, 2 threads (one process with the machine's cores);
- 2 processes, 1 thread each (``torch.distributed.run --nproc_per_node 2``, gloo): each process takes 4 of the 8
  images of a step and the gradients are averaged.

Reported: seconds per optimizer step (the median over the timed steps) and images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..runtime import REPO_ROOT, machine_description

SHAPES = ((24, 64), (40, 32), (112, 16))  # EfficientNet-Lite0 stages 1-3 at 256 px: (channels, side)


def worker(steps: int, warmup: int, images: int) -> None:
    """Train DVAD for warmup + steps and print one JSON line of step times (rank 0)."""
    import torch.distributed as dist

    from ..methods import dvad
    from ..training import world

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(images, c, s, s, generator=g) for c, s in SHAPES]
    times: list[float] = []
    original = dvad.reconstruction_loss

    def timed(recon, x, *kind):  # noqa: ANN001, ANN002, ANN202 - a timestamp per step, taken as its loss is computed
        times.append(time.perf_counter())
        return original(recon, x, *kind)

    dvad.reconstruction_loss = timed
    dvad.fit(maps, dvad.DVADConfig(), dvad.TrainBudget(steps=warmup + steps, seed=0))
    per_step = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :], strict=False)]
    if world()[0] == 0:
        print(json.dumps({"s_per_step": statistics.median(per_step), "steps_timed": len(per_step)}))
    if dist.is_initialized():
        dist.destroy_process_group()


def _run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adlib.cli.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--images", type=int, default=64, help="random training images (default: 64)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "warmup", "images"):
        if getattr(args, name) < (2 if name != "warmup" else 1):
            p.error(f"--{name} {getattr(args, name)}: too small")
    if args.worker:
        worker(args.steps, args.warmup, args.images)
        return 0
    inner = ["-m", "adlib.cli.bench_train", "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
             "--images", str(args.images)]  # fmt: skip
    ways = {
        "1 process, 1 thread": ([sys.executable, *inner], 1),
        "1 process, 2 threads": ([sys.executable, *inner], 2),
        "2 processes (torchrun, gloo), 1 thread each": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *inner],
            1,
        ),
    }
    print(f"DVAD (notebook 07's default, batch 8, 256 px maps) on {machine_description()}")
    rows = {}
    for name, (cmd, threads) in ways.items():
        r = _run(cmd, threads)
        rows[name] = {**r, "images_per_s": 8 / r["s_per_step"]}
        print(f"  {name:46s} {r['s_per_step']:.3f} s/step  {8 / r['s_per_step']:.1f} images/s")
    if args.out is not None:
        result = {"machine": machine_description(), "torch": torch.__version__, "steps": args.steps, "ways": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
