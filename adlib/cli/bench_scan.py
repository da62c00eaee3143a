"""Benchmark of the selective scan on the CPU: our chunked scan vs our sequential loop vs ``mambapy``.

    python -m adlib.cli.bench_scan                 # one thread, 5 repeats
    python -m adlib.cli.bench_scan --threads 2 --repeat 3

Shapes ``(batch*directions, D, N)`` at ``L = 1024``: ``(1, 16, 16)`` (a toy) and ``(8, 256, 16)``
(MambaAD's 32x32 stage, 8 scan directions). Inputs as at MambaAD's initialisation: ``delta`` uniform
in ``[0.001, 0.1]``, ``A = -[1..16]``, ``u, B, C`` standard normal, float32. Times are the best of
``repeat`` runs after one warm-up, forward alone (under ``no_grad``) and forward + backward.
``mambapy`` (PyPI, pure PyTorch, Blelloch parallel scan) is timed when it is installed
(``pip install mambapy``; it is not a dependency of adlib) on its own ``[B, L, D]`` layout, with the
layout change outside the timer, and with its own discretisation and read-out, as in its
``MambaBlock.selective_scan``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from adlib.nn.scan import selective_scan

SHAPES = ((1, 16, 16), (8, 256, 16))  # (batch*directions, D, N)
L = 1024


def _mambapy_scan() -> Callable | None:
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def scan(x, delta, A, B, C):  # x, delta: [b, L, D]; B, C: [b, L, N] (mambapy's layout)
        deltaA = torch.exp(delta.unsqueeze(-1) * A)  # [b, L, D, N]
        BX = delta.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)  # [b, L, D, N]
        hs = pscan(deltaA, BX)  # [b, L, D, N]
        return (hs @ C.unsqueeze(-1)).squeeze(3)  # [b, L, D]

    return scan


def _inputs(b: int, d: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, L, generator=g)
    delta = torch.rand(b, d, L, generator=g) * 0.099 + 0.001  # MambaAD's initial dt range
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)  # S4D real
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    return [u, delta, A, B, C]


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def _timer(scan: Callable, args: list[torch.Tensor], backward: bool, repeat: int) -> float:
    if not backward:
        with torch.no_grad():
            return _best_ms(lambda: scan(*args), repeat)
    args = [a.detach().requires_grad_() for a in args]
    gy = torch.randn_like(scan(*args).detach())

    def step():
        for a in args:
            a.grad = None
        scan(*args).backward(gy)

    return _best_ms(step, repeat)


def bench_scan(repeat: int = 5, threads: int = 1) -> list[dict]:
    """Time the scans at ``SHAPES``; print a table and return one row per (shape, pass)."""
    mambapy = _mambapy_scan()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for b, d, n in SHAPES:
            args = _inputs(b, d, n)
            theirs = [args[0].mT.contiguous(), args[1].mT.contiguous(), args[2], args[3].mT, args[4].mT]
            theirs = [t.contiguous() for t in theirs]
            for backward in (False, True):
                row = {"shape": (b, d, n), "L": L, "pass": "forward+backward" if backward else "forward"}
                row["threads"] = threads
                for name in ("sequential", "chunked"):
                    scan = lambda *a, m=name: selective_scan(*a, method=m)  # noqa: E731
                    row[f"{name}_ms"] = _timer(scan, args, backward, repeat)
                row["mambapy_ms"] = _timer(mambapy, theirs, backward, repeat) if mambapy else None
                row["x_vs_sequential"] = row["sequential_ms"] / row["chunked_ms"]
                row["x_vs_mambapy"] = row["mambapy_ms"] / row["chunked_ms"] if mambapy else None
                rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    _print(rows, mambapy is not None)
    return rows


def _print(rows: list[dict], with_mambapy: bool) -> None:
    head = ["(b*K, D, N)", "pass", "sequential ms", "chunked ms", "mambapy ms", "x seq", "x mambapy"]
    if not with_mambapy:
        head = head[:4] + head[5:6]
    lines = []
    for r in rows:
        cells = [str(r["shape"]), r["pass"], f"{r['sequential_ms']:.1f}", f"{r['chunked_ms']:.1f}"]
        if with_mambapy:
            cells.append(f"{r['mambapy_ms']:.1f}")
        cells.append(f"{r['x_vs_sequential']:.1f}")
        if with_mambapy:
            cells.append(f"{r['x_vs_mambapy']:.1f}")
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    print(f"selective scan, L = {L}, float32, {rows[0]['threads']} thread(s), best of repeats")
    for cells in [head, *lines]:
        print(fmt.format(*cells))
    if not with_mambapy:
        print("mambapy column omitted: mambapy is not installed (pip install mambapy)")


def main(argv: list[str] | None = None) -> int:
    from adlib.cli import _Formatter  # each option's default after its help, as in `python -m adlib`

    parser = argparse.ArgumentParser(
        prog="python -m adlib.cli.bench_scan", description=__doc__.splitlines()[0], formatter_class=_Formatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cell after one warm-up; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    for name in ("repeat", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a whole number >= 1, got {getattr(args, name)}")
    bench_scan(repeat=args.repeat, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
