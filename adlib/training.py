"""The one training loop: each method hands it a model, a loss on one batch and its optimiser settings.

A method's ``fit`` builds its model and describes its training as a :class:`Training`: the modules whose
weights change, one :class:`Optim` per optimiser (kind, learning rate, weight decay, :class:`Schedule`,
gradient clipping, and which loss term it minimises), the number of items to sample from, the batch,
and ``loss(idx, step) -> {term: value}`` on one batch of item indices. :func:`train` owns everything else:

- **the step sampler** (``StepSampler``: shuffled without replacement, reshuffled when used up) on the
  method's generator, so that seeds mean what they meant before this loop existed;
- **optimisers and schedules**: ``constant``, ``cosine`` (``CosineAnnealingLR`` down to ``min_factor`` x lr),
  ``step`` (x ``gamma`` at ``drop_at`` of the steps) and ``warmup_cosine`` (linear warm-up, cosine to
  ``min_factor``); optimisers of one term step together after one backward pass, in their order, then
  the next term's (a term may be a callable, evaluated after the earlier terms' steps: AnomalyMoE's CLUB
  estimator learns on its own optimiser after the experts' step);
- **gradient clipping** by norm per optimiser, where the method's paper clips;
- **the NaN stop**: a non-finite loss ends training with one line naming the model, the step and the
  method's hint (checked every ``LOSS_CHECK_EVERY`` steps: one device sync each);
- **progress** (tqdm) and the **loss history** of every term (``[steps]`` each);
- **a loss on held-out training normals** every ``budget.eval_every`` steps (the method's ``heldout``
  closure; evaluated in eval mode, without gradients, on a forked RNG, so it never changes training),
  kept as ``(step, value)`` pairs for the convergence rules; with ``budget.patience`` training stops after
  that many evaluations without a new best (relative improvement ``budget.min_delta``);
- **checkpoints and resume**: every ``budget.checkpoint_every`` steps, on SIGINT and SIGTERM, and at the end,
  the modules, optimisers, schedules, sampler, generators and the global RNG are written atomically to
  ``<budget.checkpoint>/<part>.pt``; a training started again with the same checkpoint folder goes on from
  there, and on a CPU ends with weights bit-identical to an uninterrupted run (tested with SIGKILL). A
  finished part's checkpoint holds its final state, so a method with several parts (Adapted-MoE's experts)
  skips the parts already done. The caller removes the folder once the model is in the model cache
  (``adlib.evaluate.fit_cached``). A checkpoint that cannot be read is reported by path and ignored;
- **data parallelism** under ``torchrun`` (``torch.distributed`` initialised, world size > 1): every rank
  draws the same global batch and trains on its slice of it; gradients are averaged over the ranks before
  each optimiser step, the arithmetic of ``DistributedDataParallel`` (methods call parts of their models,
  and DDP only averages the gradients of its own forward). BatchNorm statistics stay per rank, as with
  DDP without SyncBatchNorm; rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .runtime import progress_bar, save_atomic

SCHEDULES = ("constant", "cosine", "step", "warmup_cosine")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
CHECKPOINT_VERSION = 1

Term = Tensor | Callable[[], Tensor | None] | None


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule over ``steps`` optimizer steps (see the module docstring)."""

    kind: str = "constant"
    min_factor: float = 0.0  # cosine / warmup_cosine: the last step's lr is min_factor x lr
    drop_at: float = 0.8  # step: the lr drops at this fraction of the steps
    gamma: float = 0.1  # step: by this factor
    warmup: int = 0  # warmup_cosine: linear warm-up steps


@dataclass
class Optim:
    """One optimiser: its parameters, kind, lr, weight decay (None: torch's default), schedule, clipping."""

    params: Iterable[nn.Parameter]
    kind: str
    lr: float
    weight_decay: float | None = None
    schedule: Schedule = field(default_factory=Schedule)
    clip: float | None = None  # max gradient norm of this optimiser's parameters (None: no clipping)
    term: str = "total"  # the loss term it minimises


@dataclass
class Training:
    """What a method hands the loop (see the module docstring)."""

    name: str  # in messages and progress bars: "SimpleNet", "DVAD"
    modules: dict[str, nn.Module]  # everything whose weights or buffers change; checkpointed
    optims: list[Optim]
    n: int  # items the sampler draws from (patches, images)
    batch: int  # items per step (the global batch under torchrun)
    loss: Callable[[Tensor, int], dict[str, Term]]  # (indices [b] on the CPU, step) -> terms, "total" first
    generator: torch.Generator  # the sampler's
    hint: str  # what to change when the loss turns NaN
    generators: dict[str, torch.Generator] = field(default_factory=dict)  # other generators the loss draws from
    terms: tuple[str, ...] = ("total",)  # terms kept in the history
    after_step: Callable[[], None] | None = None  # after all optimiser steps (Adapted-MoE's centre update)
    heldout: Callable[[], float] | None = None  # loss on held-out training normals (no grad, eval mode)
    extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None  # (get, set) of other state


@dataclass
class TrainResult:
    """What the loop returns: the history of every term, held-out losses, and where it stopped."""

    history: dict[str, Tensor]  # term -> [steps run] (CPU)
    heldout: list[tuple[int, float]]  # (step, held-out loss) every eval_every steps
    steps: int  # steps run (budget.steps, or fewer after an early stop)
    stopped_early: bool
    resumed_from: int  # 0, or the step a checkpoint gave


# ----------------------------------------------------------------------------- budget, sampler and NaN stop


@dataclass(frozen=True)
class TrainBudget:
    """How much training a run affords, where, and from which seed.

    Learned methods count optimizer steps, not epochs, so the amount of training does not depend on
    the data set's size or the resolution (``adlib.methods.simplenet``).
    """

    steps: int = 200  # optimizer steps per trained network (a SimpleNet, an expert)
    patches_per_step: int = 1024  # patch features per step
    router_steps: int = 100  # optimizer steps of a routing network
    router_batch: int = 16  # images per routing step
    device: str | torch.device = "cpu"
    seed: int = 0  # the one seed of a run; sub-models derive theirs from it (documented where)
    progress: bool = False  # tqdm bars
    # The loop's long-training settings (adlib.training); their defaults change nothing about the trained weights.
    holdout: float = 0.0  # fraction of the training images held out for the held-out loss (0: none)
    eval_every: int = 0  # steps between held-out losses (0: never)
    patience: int = 0  # stop after this many held-out evaluations without a new best (0: run every step)
    min_delta: float = 0.0  # a new best must be lower by this fraction of the best so far
    checkpoint: str | None = None  # folder of this model's checkpoints (None: no checkpoints)
    checkpoint_every: int = 0  # steps between checkpoints (0: only on SIGINT / SIGTERM and at the end)

    def with_seed(self, seed: int) -> TrainBudget:
        return dataclasses.replace(self, seed=seed)


class StepSampler:
    """Minibatches of ``batch`` indices of ``range(n)``, without replacement until all are used, then reshuffled.

    The first permutation is drawn from ``generator`` when the sampler is made, the next ones when
    the previous is used up; a final incomplete batch is dropped.
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator) -> None:
        if n < 1 or batch < 1:
            raise ValueError(f"StepSampler needs n >= 1 and batch >= 1, got n={n}, batch={batch}")
        self.n, self.batch, self.generator = n, min(batch, n), generator
        self.order, self.pos = torch.randperm(n, generator=generator), 0  # [n]

    def __call__(self) -> Tensor:
        if self.pos + self.batch > self.n:  # used up: a new shuffle
            self.order, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.order[self.pos : self.pos + self.batch]  # [batch]
        self.pos += self.batch
        return idx


LOSS_CHECK_EVERY = 25  # optimizer steps between checks of the loss history (one device sync each)


def check_loss(history: Tensor, step: int, model: str, hint: str) -> None:
    """Stop training whose loss turned NaN or infinite; called every step, checks every few.

    ``history: [steps]`` holds one loss per step on the training device, written without a sync.
    Every ``LOSS_CHECK_EVERY`` steps and at the last step, ``history[: step + 1]`` is checked on the
    device (one sync); a non-finite value raises a one-line ``FloatingPointError`` naming ``model``,
    the first bad step (1-based) and ``hint`` (what to change: learning rate, inputs).
    """
    steps = len(history)
    if (step + 1) % LOSS_CHECK_EVERY and step + 1 != steps:
        return
    seen = history[: step + 1]  # [step + 1]
    bad = ~torch.isfinite(seen)  # [step + 1]
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0, 0])
    raise FloatingPointError(f"{model}: training loss is {float(seen[first])} at step {first + 1} of {steps}; {hint}")


# ----------------------------------------------------------------------------- schedules


def lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``final`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - 1 - warmup)  # 0 -> 1
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_scheduler(opt: torch.optim.Optimizer, s: Schedule, steps: int, lr: float):
    """The torch scheduler of ``s`` over ``steps`` (None for ``constant``)."""
    if s.kind == "constant":
        return None
    if s.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * s.min_factor)
    if s.kind == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, int(s.drop_at * steps))], gamma=s.gamma)
    if s.kind == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, steps, s.warmup, s.min_factor))
    raise ValueError(f"Schedule.kind must be one of {SCHEDULES}, got {s.kind!r}")


def make_optimizer(o: Optim) -> torch.optim.Optimizer:
    if o.kind not in OPTIMIZERS:
        raise ValueError(f"Optim.kind must be one of {sorted(OPTIMIZERS)}, got {o.kind!r}")
    kwargs = {} if o.weight_decay is None else {"weight_decay": o.weight_decay}
    return OPTIMIZERS[o.kind](o.params, lr=o.lr, **kwargs)


# ----------------------------------------------------------------------------- held-out split


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(train [n - m], held [m])`` of ``n`` items, ``m = round(fraction * n)`` held out at random.

    Drawn from a generator of its own (``seed``), so that a method's other draws do not move; ``fraction
    = 0`` gives all items for training and none held out.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"budget.holdout must be in [0, 1), got {fraction}")
    m = round(fraction * n)
    if fraction > 0 and not 1 <= m <= n - 2:
        raise ValueError(f"budget.holdout={fraction} of {n} items leaves {n - m} to train on and {m} held out")
    if m == 0:
        return torch.arange(n), torch.arange(0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))  # [n]
    return perm[m:].sort().values, perm[:m].sort().values


def levelled_off(curve: list[tuple[int, float]], fraction: float = 0.2, tol: float = 0.01) -> bool:
    """Whether a held-out loss curve ``[(step, loss), ...]`` has levelled off: over the last ``fraction`` of its
    steps, the loss changed by less than ``tol`` of its value at the start of that stretch (a relative change).

    The convergence rule of the DVAD and AnomalyMoE issues ("under 1 % change over the last fifth"). A curve
    that rose over the stretch has levelled off too (it is not improving). Needs 2 points in the stretch.
    """
    if not 0 < fraction < 1 or tol <= 0:
        raise ValueError(f"need 0 < fraction < 1 and tol > 0, got fraction={fraction}, tol={tol}")
    if len(curve) < 2:
        return False
    last = curve[-1][0]
    start = last - fraction * last  # the stretch: steps in [start, last]
    window = [v for s, v in curve if s >= start]
    if len(window) < 2:
        return False
    first, end = window[0], window[-1]
    return (first - end) < tol * abs(first)


def steps_to_level(curve: list[tuple[int, float]], fraction: float = 0.2, tol: float = 0.01) -> int | None:
    """The first step at which the curve up to it has :func:`levelled_off` (None: not within the curve)."""
    for k in range(2, len(curve) + 1):
        if levelled_off(curve[:k], fraction, tol):
            return curve[k - 1][0]
    return None


# ----------------------------------------------------------------------------- distributed


def world() -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(params: list[nn.Parameter], size: int) -> None:
    """Average the gradients of ``params`` over the ranks (missing gradients count as zeros)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [P]
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for p in params:
        k = p.numel()
        p.grad = flat[offset : offset + k].view_as(p).clone()
        offset += k


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_path(budget: TrainBudget, part: str) -> Path | None:
    """``<budget.checkpoint>/<part>.pt``, or None when the budget names no checkpoint folder."""
    return None if budget.checkpoint is None else Path(budget.checkpoint) / f"{part}.pt"


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _load_checkpoint(path: Path | None, name: str) -> dict | None:
    """The checkpoint at ``path`` if it is one of ``name``'s; else None (an unreadable file is reported)."""
    if path is None or not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("name") != name:
            raise ValueError(f"not a version-{CHECKPOINT_VERSION} checkpoint of {name}")
        return ckpt
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is ignored, and said so
        warnings.warn(
            f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); starting from step 0", stacklevel=3
        )
        return None


class _Signals:
    """SIGINT and SIGTERM are noted and acted on between steps, never inside one.

    A step interrupted half-way (one optimiser stepped, the next not) cannot be saved or resumed, so the
    handlers only record the signal; after the step the loop saves a checkpoint and raises
    ``KeyboardInterrupt`` (SIGINT) or ``SystemExit(128 + signum)`` (SIGTERM). A second SIGINT raises at once.
    Outside the main thread signals are left alone.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.old: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _Signals:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def raise_if_received(self) -> None:
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is not None:
            raise SystemExit(128 + self.received)


# ----------------------------------------------------------------------------- the loop


class _Loop:
    def __init__(self, t: Training, budget: TrainBudget, part: str) -> None:
        self.t, self.budget, self.device = t, budget, torch.device(budget.device)
        self.steps = budget.steps
        self.rank, self.size = world()
        if t.batch % self.size:
            raise ValueError(f"{t.name}: the global batch {t.batch} must divide over {self.size} processes")
        self.opts = [make_optimizer(o) for o in t.optims]
        self.scheds = [
            make_scheduler(opt, o.schedule, self.steps, o.lr) for opt, o in zip(self.opts, t.optims, strict=True)
        ]
        self.groups: dict[str, list[int]] = {}  # term -> optimiser indices, in order
        for i, o in enumerate(t.optims):
            self.groups.setdefault(o.term, []).append(i)
        self.sampler = StepSampler(t.n, t.batch, t.generator)
        self.history = {k: torch.zeros(self.steps, device=self.device) for k in t.terms}  # [steps] each
        self.heldout: list[tuple[int, float]] = []
        self.step, self.done, self.stopped_early = 0, False, False
        self.path = checkpoint_path(budget, part)

    # -- state
    def state(self) -> dict:
        t = self.t
        return {
            "version": CHECKPOINT_VERSION,
            "name": t.name,
            "step": self.step,
            "done": self.done,
            "stopped_early": self.stopped_early,
            "modules": {k: m.state_dict() for k, m in t.modules.items()},
            "optims": [o.state_dict() for o in self.opts],
            "scheds": [s.state_dict() if s is not None else None for s in self.scheds],
            "sampler": {"order": self.sampler.order, "pos": self.sampler.pos, "batch": self.sampler.batch},
            "generators": {"sampler": t.generator.get_state(), **{k: g.get_state() for k, g in t.generators.items()}},
            "rng": _rng_state(self.device),
            "history": {k: v[: self.step].cpu() for k, v in self.history.items()},
            "heldout": list(self.heldout),
            "extra": t.extra_state[0]() if t.extra_state else None,
        }

    def restore(self, ckpt: dict) -> None:
        t = self.t
        for k, m in t.modules.items():
            m.load_state_dict(ckpt["modules"][k])
        for o, s in zip(self.opts, ckpt["optims"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.scheds, ckpt["scheds"], strict=True):
            if sch is not None:
                sch.load_state_dict(s)
        self.sampler.order, self.sampler.pos = ckpt["sampler"]["order"], ckpt["sampler"]["pos"]
        t.generator.set_state(ckpt["generators"]["sampler"])
        for k, g in t.generators.items():
            g.set_state(ckpt["generators"][k])
        _set_rng_state(ckpt["rng"], self.device)
        self.step, self.done, self.stopped_early = ckpt["step"], ckpt["done"], ckpt["stopped_early"]
        for k, v in ckpt["history"].items():
            self.history[k][: len(v)] = v.to(self.device)
        self.heldout = list(ckpt["heldout"])
        if t.extra_state:
            t.extra_state[1](ckpt["extra"])

    def save(self) -> None:
        if self.path is not None and self.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic(self.state(), self.path)
        if self.size > 1:
            dist.barrier()

    # -- one step
    def local(self, idx: Tensor) -> Tensor:
        """This rank's slice of the global batch ``idx``."""
        if self.size == 1:
            return idx
        b = len(idx) // self.size
        return idx[self.rank * b : (self.rank + 1) * b]

    def run_step(self) -> None:
        t, step = self.t, self.step
        terms = t.loss(self.local(self.sampler()), step)
        for term, members in self.groups.items():
            value = terms.get(term)
            if callable(value):
                value = value()
                terms[term] = value
            if value is None:
                continue
            for i in members:
                self.opts[i].zero_grad(set_to_none=True)
            value.backward()
            for i in members:
                params = [p for g in self.opts[i].param_groups for p in g["params"]]
                if self.size > 1:
                    _average_gradients(params, self.size)
                if t.optims[i].clip is not None:
                    nn.utils.clip_grad_norm_(params, t.optims[i].clip)
                self.opts[i].step()
                if self.scheds[i] is not None:
                    self.scheds[i].step()
        if t.after_step is not None:
            t.after_step()
        for k in t.terms:
            v = terms.get(k)
            if isinstance(v, Tensor):
                v = v.detach()
                if self.size > 1:
                    v = v.clone()
                    dist.all_reduce(v)
                    v /= self.size
                self.history[k][step] = v
        check_loss(self.history[t.terms[0]], step, t.name, t.hint)

    def evaluate(self) -> None:
        if self.t.heldout is None:
            return
        modes = {k: m.training for k, m in self.t.modules.items()}
        for m in self.t.modules.values():
            m.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            value = float(self.t.heldout())
        for k, m in self.t.modules.items():
            m.train(modes[k])
        self.heldout.append((self.step, value))
        patience = self.budget.patience
        if patience and len(self.heldout) > patience:
            best_before = min(v for _, v in self.heldout[:-patience])
            recent = min(v for _, v in self.heldout[-patience:])
            if recent >= best_before - self.budget.min_delta * abs(best_before):  # no new best: stop
                self.stopped_early = True

    def run(self) -> TrainResult:
        resumed = 0
        ckpt = _load_checkpoint(self.path, self.t.name)
        if ckpt is not None:
            self.restore(ckpt)
            resumed = self.step
        for m in self.t.modules.values():
            m.train()
        every, eval_every = self.budget.checkpoint_every, self.budget.eval_every
        bar = progress_bar(
            total=self.steps, initial=self.step, desc=self.t.name, disable=not self.budget.progress, leave=False
        )
        try:
            with _Signals() as signals:
                while not self.done and self.step < self.steps:
                    self.run_step()
                    self.step += 1
                    bar.update(1)
                    if eval_every and (self.step % eval_every == 0 or self.step == self.steps):
                        self.evaluate()
                    self.done = self.step == self.steps or self.stopped_early
                    if self.done or (every and self.step % every == 0) or signals.received is not None:
                        self.save()  # on a signal: the last completed step; a rerun goes on from here
                    signals.raise_if_received()
        finally:
            bar.close()
        for m in self.t.modules.values():
            m.eval()
        n = self.step
        return TrainResult(
            {k: v[:n].cpu() for k, v in self.history.items()}, self.heldout, n, self.stopped_early, resumed
        )


def train(t: Training, budget: TrainBudget, part: str = "model") -> TrainResult:
    """Run ``t`` for ``budget.steps`` steps (see the module docstring); modules end in eval mode.

    ``part`` names the checkpoint file inside ``budget.checkpoint`` (one per training of a method that
    trains several: ``"expert3"``, ``"router"``).
    """
    if budget.steps < 1:
        raise ValueError(f"{t.name}: budget.steps must be >= 1, got {budget.steps}")
    return _Loop(t, budget, part).run()
