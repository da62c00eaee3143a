"""`python -m adlib.cli.bench_train`: its worker trains through the loop and reports a step time."""

from __future__ import annotations

import json

from adlib.cli import bench_train


def test_the_worker_times_dvad_steps(one_thread, capsys, monkeypatch) -> None:
    monkeypatch.setattr(bench_train, "SHAPES", ((4, 16), (6, 8), (8, 4)))  # tiny maps: the loop's code path only
    bench_train.worker(steps=2, warmup=1, images=8)
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["steps_timed"] == 1 and got["s_per_step"] > 0  # 3 steps: one interval after the warm-up step
