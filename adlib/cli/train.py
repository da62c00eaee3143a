"""`python -m adlib train`: one model, or a notebook's grid of models, into the model cache (see adlib.grids).

Every training goes through the one loop (``adlib.training``) with checkpoints beside its model cache entry, so
a run that is stopped (Ctrl-C, SIGTERM from a scheduler, a session that ends) goes on from its last checkpoint
when the same command is started again. Under ``torchrun --nproc_per_node N`` each model is trained by N
processes (gloo on CPUs, NCCL on GPUs), the global batch split over them; rank 0 writes the cache entry.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from .. import grids
from ..evaluate import fit_cached
from ..training import world


def init_distributed(device: str) -> str:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group; returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu" if device == "auto" else device


def select(args: argparse.Namespace, profile) -> list[grids.Job]:  # noqa: ANN001
    """The jobs the arguments ask for: a notebook's grid (a shard of it), or one method's default model."""
    if args.notebook is not None:
        todo = grids.jobs(args.notebook, profile, args.seed)
    else:
        nb, label = grids.DEFAULT_JOBS[args.method]
        todo = [j for j in grids.jobs(nb, profile, args.seed) if j.label == label and j.seed == args.seed]
    return grids.shard(todo, *args.shard_tuple)


def check_train_args(args: argparse.Namespace) -> None:
    """Check and normalise ``train``'s arguments in place; ValueError naming the first bad one."""
    from ..data.shared import run_data_root
    from .reproduce import check_device

    if (args.method is None) == (args.notebook is None):
        raise ValueError("give either a METHOD (its notebook's default model) or --notebook NN (the notebook's grid)")
    if args.notebook is not None and args.notebook not in grids.GRID_NOTEBOOKS:
        have = ", ".join(grids.GRID_NOTEBOOKS)
        raise ValueError(f"--notebook {args.notebook}: the notebooks with a grid of models are {have}")
    parts = args.shard.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
        raise ValueError(f"--shard {args.shard}: expected i/n with 0 <= i < n, e.g. 0/2 and 1/2 for two processes")
    args.shard_tuple = (int(parts[0]), int(parts[1]))
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every {args.checkpoint_every}: must be at least 1 step")
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads}: must be >= 0 (0: torch's default)")
    check_device(args.device)
    root = run_data_root(args.data_root)
    args.data_root = str(root) if root is not None else None


def main_train(args: argparse.Namespace) -> int:
    """Train (or list) the selected jobs; returns the exit status."""
    from ..nb import setup

    device = init_distributed(args.device)
    rank, size = world()
    run = setup(PROFILE=args.profile, DEVICE=device, DATA_ROOT=args.data_root, SEED=args.seed, verbose=rank == 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    todo = select(args, run.profile)
    first = {d: i for i, d in enumerate(dict.fromkeys(j.data for j in todo))}  # training sets in order of need
    todo = sorted(todo, key=lambda j: first[j.data])  # stable: each set loaded once, its jobs in grid order
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{len(todo)} model(s) in this shard, {size} process(es) each, checkpoints every {args.checkpoint_every} steps")
    cats = [c for part in grids.multiclass_sets(run.profile, run.data_root, run.seed) for c in part]
    keys: dict[str, str] = {}  # training set -> data key, or why it is absent
    sets: dict[str, object] = {}  # training set -> features, loaded for the first job that trains on it
    counts = {"trained": 0, "in the cache": 0, "skipped": 0, "to train": 0}
    for i, job in enumerate(todo, 1):
        if job.data not in keys:
            try:
                keys[job.data] = grids.training_key(job.data, cats, run.device)
            except FileNotFoundError as err:
                keys[job.data] = "absent: " + str(err).split(". ")[0]
        key = keys[job.data]
        budget = replace(
            grids.job_budget(job, run), progress=rank == 0 and not args.quiet, checkpoint_every=args.checkpoint_every
        )
        status = (
            "skipped" if key.startswith("absent: ") else "in the cache" if grids.is_cached(job, budget, key) else None
        )
        if status is None and args.list:
            status = "to train"
        if status is not None:
            say(f"[{i}/{len(todo)}] {job.name}: {status}" + (f" ({key[8:]})" if status == "skipped" else ""))
            counts[status] += 1
            continue
        if job.data not in sets:
            sets.clear()  # one training set in memory at a time (those of 3,000 images at 256 px take GBs)
            if rank != 0 and size > 1:
                dist.barrier()  # rank 0 extracts (and caches) the features first
            sets[job.data] = grids.training_set(job.data, cats, run.device, progress=rank == 0 and not args.quiet)
            if rank == 0 and size > 1:
                dist.barrier()
        t0 = time.perf_counter()
        fit_cached(job.method, sets[job.data], job.cfg, budget, data_key=key)  # checkpoints beside its entry
        say(f"[{i}/{len(todo)}] {job.name}: trained in {time.perf_counter() - t0:.0f} s")
        counts["trained"] += 1
    say("done: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k == "trained"))
    if size > 1:
        dist.destroy_process_group()
    return 0
