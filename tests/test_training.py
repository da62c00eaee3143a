"""The one training loop (adlib.training): the old loops' weights, schedules, held-out loss and early stop,
checkpoints and resume after SIGKILL / SIGTERM, corrupt checkpoints, data parallelism over 2 gloo processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from adlib import training
from adlib.evaluate import checkpoint_dir, fit_cached, model_key
from adlib.methods import METHODS, dvad
from adlib.methods.base import TrainBudget
from adlib.runtime import REPO_ROOT
from adlib.training import Optim, Schedule, Training, holdout_split, train
from tests.methods import loop_cases as lc

pytestmark = pytest.mark.usefixtures("one_thread")


def _same(a: dict, b: dict, exact: bool = True) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        if exact:
            assert torch.equal(a["state"][k], b["state"][k]), k
        else:
            torch.testing.assert_close(a["state"][k], b["state"][k], rtol=1e-4, atol=1e-5, msg=k)
    for k in a["history"]:
        torch.testing.assert_close(
            a["history"][k], b["history"][k], rtol=0 if exact else 1e-4, atol=0 if exact else 1e-5
        )


# ----------------------------------------------------------------------------- the old loops' weights


@pytest.mark.parametrize("name", list(lc.CASES))
def test_the_loop_gives_the_weights_of_the_old_per_method_loop(name: str) -> None:
    """loop_reference.pt was written by the per-method loops of commit abd7b6f (tests/methods/loop_cases.py).

    Bit-identical on the machine that wrote it (an Intel Xeon, torch 2.14.1); another CPU may round
    differently in its vector kernels, so the check allows float32 rounding noise and nothing more.
    """
    ref = torch.load(lc.REFERENCE, weights_only=False)[name]
    _same(lc.run_case(name), ref, exact=False)


def test_training_twice_is_bit_identical() -> None:
    _same(lc.run_case("anomaly_moe"), lc.run_case("anomaly_moe"))


# ----------------------------------------------------------------------------- schedules


def _lrs(schedule: Schedule, steps: int = 10, lr: float = 1.0) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = training.make_scheduler(opt, schedule, steps, lr)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_schedules_follow_their_formulas() -> None:
    assert _lrs(Schedule()) == [1.0] * 10
    step = _lrs(Schedule("step", drop_at=0.8, gamma=0.1))
    assert step[:8] == [1.0] * 8 and step[8:] == pytest.approx([0.1, 0.1])  # x0.1 from step 8 of 10
    cosine = _lrs(Schedule("cosine", min_factor=0.4))
    assert cosine == pytest.approx([0.4 + 0.6 * 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)])
    warm = _lrs(Schedule("warmup_cosine", min_factor=0.01, warmup=3))
    assert warm[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert warm[-1] == pytest.approx(0.01) and warm[3] == pytest.approx(1.0)  # cosine from 1 to 0.01 at the end
    with pytest.raises(ValueError, match="Schedule.kind must be one of"):
        _lrs(Schedule("linear"))


# ----------------------------------------------------------------------------- a toy training for the loop's rules


def _toy(heldout_values: list[float] | None = None, clip: float | None = None, batch: int = 4) -> Training:
    """Fit w to the mean of 16 numbers by SGD-like Adam; ``heldout`` replays ``heldout_values``."""
    torch.manual_seed(0)
    data = torch.arange(16.0)
    model = nn.Linear(1, 1, bias=False)
    values = iter(heldout_values or [])

    def loss(idx: torch.Tensor, step: int) -> dict:
        return {"total": ((model.weight[0, 0] - data[idx]) ** 2).mean()}

    return Training(
        "toy",
        {"model": model},
        [Optim(model.parameters(), "adam", 0.5, clip=clip)],
        16,
        batch,
        loss,
        torch.Generator().manual_seed(0),
        "hint",
        heldout=(lambda: next(values)) if heldout_values is not None else None,
    )


def test_heldout_loss_is_logged_every_k_steps_and_the_stop_rule_fires() -> None:
    budget = TrainBudget(steps=12, eval_every=2)
    result = train(_toy([5, 4, 3, 2, 1, 0]), budget)
    assert [s for s, _ in result.heldout] == [2, 4, 6, 8, 10, 12] and not result.stopped_early
    # a new best, then 2 evaluations without one: stopped at the 2nd (step 6), patience 2
    stopped = train(_toy([5, 4, 4.5, 4.2, 1, 0]), replace(budget, patience=2))
    assert stopped.stopped_early and stopped.steps == 8 and len(stopped.history["total"]) == 8
    # a tie is not a new best
    assert train(_toy([5, 4, 4, 4, 1, 0]), replace(budget, patience=2)).steps == 8
    # min_delta: 3.9 is not 10 % below 4
    assert train(_toy([5, 4, 3.9, 3.8, 1, 0]), replace(budget, patience=2, min_delta=0.1)).steps == 8


def test_gradient_clipping_bounds_the_step() -> None:
    t = _toy(clip=1e-3)
    seen = []
    original = nn.utils.clip_grad_norm_

    def spy(params, max_norm):  # noqa: ANN001
        total = original(params, max_norm)
        seen.append(float(torch.cat([p.grad.reshape(-1) for p in t.modules["model"].parameters()]).norm()))
        return total

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nn.utils, "clip_grad_norm_", spy)
        train(t, TrainBudget(steps=3))
    assert len(seen) == 3 and max(seen) <= 1e-3 * (1 + 1e-5)


def test_holdout_split_is_disjoint_seeded_and_refuses_bad_fractions() -> None:
    tr, held = holdout_split(20, 0.2, seed=0)
    assert len(held) == 4 and len(tr) == 16 and set(tr.tolist()).isdisjoint(held.tolist())
    assert torch.equal(holdout_split(20, 0.2, seed=0)[1], held) and not torch.equal(holdout_split(20, 0.2, 1)[1], held)
    assert len(holdout_split(20, 0.0, 0)[1]) == 0
    with pytest.raises(ValueError, match=r"budget.holdout must be in \[0, 1\)"):
        holdout_split(20, 1.0, 0)
    with pytest.raises(ValueError, match="leaves 1 to train on"):
        holdout_split(4, 0.8, 0)


def test_dvad_heldout_loss_is_its_training_loss_on_the_held_out_images() -> None:
    maps = lc._pyramid()
    model = dvad.fit(maps, lc.DVAD_TINY, TrainBudget(steps=4, seed=1, holdout=0.25, eval_every=2))
    assert [s for s, _ in model.heldout_history] == [2, 4]
    _, held = holdout_split(12, 0.25, 1)
    with torch.no_grad():
        x = [m[held] for m in maps]
        assert model.heldout_history[-1][1] == pytest.approx(float(dvad.reconstruction_loss(model(x), x)), rel=1e-5)
    # held out = not trained on: the same run without a split differs
    assert not torch.equal(dvad.fit(maps, lc.DVAD_TINY, TrainBudget(steps=4, seed=1)).loss_history, model.loss_history)


def test_nan_stops_with_the_name_step_and_hint() -> None:
    t = _toy()
    t.loss = lambda idx, step: {"total": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(FloatingPointError, match=r"^toy: training loss is nan at step 1 of 3; hint$"):
        train(t, TrainBudget(steps=3))


def test_the_global_batch_must_divide_over_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "world", lambda: (0, 3))
    with pytest.raises(ValueError, match="toy: the global batch 4 must divide over 3 processes"):
        train(_toy(), TrainBudget(steps=1))


# ----------------------------------------------------------------------------- checkpoints and resume


CHILD = """
import sys, time
import torch
from adlib import training
run_step = training._Loop.run_step
def slow(self):
    run_step(self)
    time.sleep(float(sys.argv[3]))
training._Loop.run_step = slow
from tests.methods import loop_cases as lc
out = lc.run_case(sys.argv[1], checkpoint=sys.argv[2], checkpoint_every=1)
torch.save(out, sys.argv[2] + ".result")
"""


def _child(name: str, folder: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-c", CHILD, name, str(folder), str(delay)]
    return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)


def _wait_for(folder: Path, part: str, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        path = folder / f"{part}.pt"
        if path.is_file():
            try:
                if torch.load(path, weights_only=False)["step"] >= step:
                    return
            except Exception:  # noqa: BLE001 - being replaced: look again
                pass
        assert proc.poll() is None, "the training ended before it could be interrupted"
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint of {part} at step {step}")


@pytest.mark.parametrize(("name", "part", "step"), [("anomaly_moe", "model", 4), ("adapted_moe", "expert1", 2)])
def test_a_training_killed_with_sigkill_resumes_to_bit_identical_weights(
    tmp_path: Path, name: str, part: str, step: int
) -> None:
    folder = tmp_path / "ckpt"
    proc = _child(name, folder, 0.3)
    _wait_for(folder, part, step, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "ckpt.result").exists()
    resumed = lc.run_case(name, checkpoint=str(folder), checkpoint_every=1)
    _same(resumed, lc.run_case(name))


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)])
def test_sigterm_and_sigint_write_a_checkpoint_and_the_rerun_goes_on(tmp_path: Path, sig: int, status: int) -> None:
    """The signal is acted on after the step it arrived in (the child sleeps after each step, where it lands)."""
    folder = tmp_path / "ckpt"
    proc = _child("simplenet", folder, 0.2)
    _wait_for(folder, "model", 2, proc)
    proc.send_signal(sig)
    assert proc.wait() == status  # SIGTERM: SystemExit(143); SIGINT: an uncaught KeyboardInterrupt, status 1
    assert (b"KeyboardInterrupt" in proc.stderr.read()) == (sig == signal.SIGINT)
    ckpt = torch.load(folder / "model.pt", weights_only=False)
    assert 2 <= ckpt["step"] < 30 and not ckpt["done"]
    _same(lc.run_case("simplenet", checkpoint=str(folder)), lc.run_case("simplenet"))


def test_a_finished_part_is_not_trained_again(tmp_path: Path) -> None:
    budget = TrainBudget(steps=5, checkpoint=str(tmp_path))
    first = train(_toy(), budget)
    t = _toy()
    t.loss = lambda idx, step: pytest.fail("a finished training ran a step")
    again = train(t, budget)
    assert again.resumed_from == 5 and torch.equal(again.history["total"], first.history["total"])
    assert torch.equal(t.modules["model"].weight, _weights_after(5))


def _weights_after(steps: int) -> torch.Tensor:
    t = _toy()
    train(t, TrainBudget(steps=steps))
    return t.modules["model"].weight


def test_a_corrupt_checkpoint_is_named_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=r"model\.pt: unreadable checkpoint .* starting from step 0"):
        result = train(_toy(), TrainBudget(steps=5, checkpoint=str(tmp_path)))
    assert result.resumed_from == 0


def test_fit_cached_trains_with_checkpoints_and_removes_them_when_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADLIB_CACHE", str(tmp_path / "features"))
    seen = []
    fit = METHODS["dvad"].fit
    monkeypatch.setitem(METHODS, "dvad", replace(METHODS["dvad"], fit=lambda *a, **k: seen.append(a[2]) or fit(*a)))
    budget = TrainBudget(steps=3, seed=1)
    model = fit_cached("dvad", lc._pyramid(), lc.DVAD_TINY, budget, data_key="toy")
    key = model_key(METHODS["dvad"], lc.DVAD_TINY, budget, "toy", {})
    assert seen[0].checkpoint == str(checkpoint_dir(key)) and not checkpoint_dir(key).exists()
    assert len(model.loss_history) == 3
    # a stop rule is part of the key only where set: older entries keep their keys
    assert "stop rule" not in key and "stop rule" in model_key(
        METHODS["dvad"], lc.DVAD_TINY, replace(budget, holdout=0.1), "toy", {}
    )


# ----------------------------------------------------------------------------- data parallel


DDP_CHILD = """
import sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
from tests.methods import loop_cases as lc
out = lc.run_case(sys.argv[3])
if rank == 0:
    torch.save(out, store + ".result")
dist.destroy_process_group()
"""


@pytest.mark.parametrize("name", ["router softmax", "simplenet"])
def test_two_gloo_processes_train_the_weights_of_one_with_the_same_global_batch(tmp_path: Path, name: str) -> None:
    """Averaged gradients of two halves = the gradient of the whole batch, up to float32 rounding.

    The router's softmax loss is a mean of per-image terms. SimpleNet's discriminator has BatchNorm, whose
    statistics are per rank (as DistributedDataParallel without SyncBatchNorm), and each rank draws the
    same noise for its half: there the two trainings differ, and the test says by how much they may.
    """
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", DDP_CHILD, str(r), str(store), name], cwd=REPO_ROOT, env=env)
        for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    two = torch.load(f"{store}.result", weights_only=False)
    one = lc.run_case(name)
    if name == "router softmax":
        _same(two, one, exact=False)
    else:
        diff = max(float((two["state"][k] - one["state"][k]).abs().max()) for k in one["state"])
        assert 0 < diff < 0.5  # trained, close, not equal: per-rank BatchNorm and noise


def test_gradients_are_averaged_over_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other rank's gradients arrive by all_reduce (a sum); the loop divides by the world size."""
    other = torch.tensor([1.0, 3.0, 5.0, 7.0])  # the other rank's gradients, flattened: [a (2), b (2)]
    monkeypatch.setattr(training.dist, "all_reduce", lambda flat: flat.add_(other))
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 1.0])  # b has no gradient on this rank: it counts as zeros
    training._average_gradients([a, b], 2)
    assert a.grad.tolist() == [2.0, 2.0] and b.grad.tolist() == [2.5, 3.5]


def test_a_curve_levels_off_when_the_last_fifth_improves_by_under_one_percent() -> None:
    falling = [(s, 100.0 / s) for s in range(10, 1010, 10)]  # 1/s: over [800, 1000] it falls by 20 %
    assert not training.levelled_off(falling)
    flat = [(s, 1.0 + 1.0 / s) for s in range(10, 1010, 10)]  # over [800, 1000]: 1.00125 -> 1.001, 0.02 %
    assert training.levelled_off(flat)
    rising = [(10, 1.0), (20, 0.5), (30, 0.6), (40, 0.7), (50, 0.8)]
    assert training.levelled_off(rising)  # not improving counts as levelled off
    assert not training.levelled_off(rising[:2])  # one point in its last fifth: nothing to judge yet
    # the first step where the curve so far has levelled off: the decay 2^(-s/100) + 1 levels at a known step
    curve = [(s, 1.0 + 2.0 ** (-s / 100)) for s in range(10, 3010, 10)]
    at = training.steps_to_level(curve)
    assert at is not None and training.levelled_off([c for c in curve if c[0] <= at])
    assert not training.levelled_off([c for c in curve if c[0] <= at - 10])
    assert training.steps_to_level(falling) is None
    with pytest.raises(ValueError, match="0 < fraction < 1"):
        training.levelled_off(flat, fraction=1.5)
