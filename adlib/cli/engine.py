"""The papermill engine of `python -m adlib reproduce`: a client that cannot hang on a lost message.

**The hang it fixes.** An ipywidgets explorer (``widgets.interact``) that draws an inline
matplotlib figure puts the figure into an Output widget. nbclient, which executes the notebook
for papermill, mimics the front end's Output widget and sends the widget's new state back to the
kernel as a ``comm_msg`` on the *shell* socket, from the same asyncio loop in which another task
is awaiting ``socket.poll()`` on that very socket for the cell's ``execute_reply``. A ZMQ socket
signals readiness through an edge-triggered file descriptor; the ``send`` makes libzmq process the
socket's pending commands (the arriving reply among them) and so consumes the edge the waiting poll
was going to wake on. The reply then sits in the socket's queue while the client sleeps for ever
with the kernel idle: 0 % CPU on both sides (nbclient issue 312 reports the same cells). Without
the figure the state is small and the race window tiny; with ``MPLBACKEND=Agg`` nothing is drawn
inline, which is why a CI that sets Agg never saw it.

**The fix, where it lives.** :class:`SlicedChannel` waits for a message in slices of
``POLL_SLICE`` seconds; each slice starts with a fresh, non-blocking look at the socket, so a
message whose wake-up was lost is picked up within a slice. It replaces both channels of the kernel
client. On top of that, a :class:`Watchdog` fails a cell that shows *no activity* for
``inactivity_s`` seconds: no message from the kernel (output, widget state, reply) and, where
``/proc`` tells, no CPU time used by the kernel. That turns any other hang into a one-line error
naming the notebook and the cell (:class:`CellInactive`); the runner retries such a notebook once.

The kernel also runs over IPC sockets on POSIX (no "running over TCP without encryption" warning,
no TCP port races between kernels) and always draws inline (``MPLBACKEND`` is set to the inline
backend for the kernel whatever the caller's environment says), so the smoke tests run what users
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from nbclient.util import ensure_async, run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args
from traitlets import DottedObjectName, Type, default

POLL_SLICE = 0.25  # seconds: the longest a message can wait unseen in a socket whose wake-up was lost
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
ENGINE_NAME = "adlib"


class CellInactive(RuntimeError):
    """A cell showed no activity (no message, no kernel CPU) for longer than the limit."""

    def __init__(self, seconds: float, cell_index: int | None = None, source: str = "") -> None:
        self.seconds, self.cell_index, self.source = seconds, cell_index, source
        where = "a cell" if cell_index is None else f"cell {cell_index}"
        first = source.strip().splitlines()[0][:60] if source.strip() else ""
        super().__init__(
            f"{where}{f' ({first})' if first else ''}: no output, no reply and no kernel CPU for {seconds:.0f} s"
        )


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` and its waited-for children (Linux ``/proc``), else None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


class Watchdog:
    """Time since the kernel last showed activity: a message received or CPU time used."""

    def __init__(self, limit_s: float | None, pid: int | None = None) -> None:
        self.limit_s = limit_s if limit_s and limit_s > 0 else None
        self.pid = pid
        self.reset()

    def reset(self) -> None:
        """Start counting afresh (a new cell was sent)."""
        self.last = time.monotonic()
        self.cpu = process_cpu_seconds(self.pid)

    def touch(self) -> None:
        """A message arrived."""
        self.last = time.monotonic()

    def idle_seconds(self) -> float:
        cpu = process_cpu_seconds(self.pid)
        if cpu is not None and self.cpu is not None and cpu > self.cpu + 0.05:  # the kernel computes
            self.cpu = cpu
            self.last = time.monotonic()
        return time.monotonic() - self.last

    def check(self) -> None:
        """Raise :class:`CellInactive` once the kernel has been inactive for longer than the limit."""
        if self.limit_s is not None and (idle := self.idle_seconds()) > self.limit_s:
            raise CellInactive(idle)


class SlicedChannel(AsyncZMQSocketChannel):
    """``get_msg`` that looks at the socket afresh every ``POLL_SLICE`` seconds (see module docstring).

    ``watchdog`` (set by :class:`RobustKernelClient`) is touched by every message; the shell channel
    (``raises=True``) raises :class:`CellInactive` from it while waiting without a deadline.
    """

    watchdog: Watchdog | None = None
    raises: bool = False

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        assert self.socket is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, min(POLL_SLICE, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                msg = await self._recv()
                if self.watchdog is not None:
                    self.watchdog.touch()
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty
            if deadline is None and self.raises and self.watchdog is not None:
                self.watchdog.check()


class RobustKernelClient(AsyncKernelClient):
    """An async kernel client whose channels are :class:`SlicedChannel`, sharing one :class:`Watchdog`."""

    shell_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    watchdog: Watchdog = Watchdog(None)

    @property
    def shell_channel(self):  # noqa: ANN201 - jupyter_client's type
        ch = super().shell_channel
        ch.watchdog, ch.raises = self.watchdog, True
        return ch

    @property
    def iopub_channel(self):  # noqa: ANN201
        ch = super().iopub_channel
        ch.watchdog = self.watchdog
        return ch


IPC_PATH_MAX = 100  # a unix socket path holds at most 107 bytes (sun_path); the kernel appends "-N"


def _ipc_prefix() -> str | None:
    """An absolute, unique, short enough socket prefix: Jupyter's runtime folder, else the temp folder.

    jupyter_client's default, "kernel-ipc", is relative: a client and a kernel that run in different
    folders would never meet, and two kernels in one folder could collide. A deep runtime folder (a
    HOME inside pytest's tmp_path) makes paths longer than a unix socket allows; then the temp folder
    serves, and where that is too deep as well, None (the caller falls back to TCP).
    """
    from jupyter_core.paths import jupyter_runtime_dir

    name = f"adlib-{uuid.uuid4().hex[:12]}-ipc"
    for folder in (Path(jupyter_runtime_dir()), Path(tempfile.gettempdir())):
        if len(str(folder / name).encode()) + 8 <= IPC_PATH_MAX:
            folder.mkdir(parents=True, exist_ok=True)
            return str(folder / name)
    return None


class RobustKernelManager(AsyncKernelManager):
    """IPC transport on POSIX, the inline matplotlib backend, and a :class:`RobustKernelClient`."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc" if os.name == "posix" and _ipc_prefix() is not None else "tcp"

    @default("ip")
    def _default_ip(self) -> str:
        """For IPC an absolute, unique socket prefix (see :func:`_ipc_prefix`)."""
        prefix = _ipc_prefix() if self.transport == "ipc" else None
        return prefix if prefix is not None else super()._ip_default()

    client_class = DottedObjectName(f"{__name__}.RobustKernelClient")
    client_factory = Type(klass=RobustKernelClient)

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        env = dict(kw.pop("env", None) or os.environ)
        env["MPLBACKEND"] = INLINE_BACKEND  # executed copies hold the figures users see
        await super().start_kernel(env=env, **kw)


class RobustNotebookClient(PapermillNotebookClient):
    """Papermill's client with :class:`RobustKernelManager` and the per-cell inactivity limit."""

    kernel_manager_class = Type(RobustKernelManager, config=True)  # type: ignore[assignment]

    def __init__(self, nb_man: Any, inactivity_s: float | None = None, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.inactivity_s = inactivity_s

    def _close_sockets(self, km: Any) -> None:
        """Close every socket of a kernel that failed to start, now and with no linger.

        A socket that failed to connect (or nbclient's cleanup, whose stop_channels reopens such a channel)
        is otherwise left to the garbage collector, whose Context.term can then wait for ever on it, in
        whatever code happens to run then: a later test, a later notebook.
        """
        for holder in (getattr(self, "kc", None), km):
            ctx = getattr(holder, "context", None)
            if ctx is not None and not ctx.closed:
                with contextlib.suppress(Exception):
                    ctx.destroy(linger=0)

    async def async_start_new_kernel(self, **kw: Any) -> None:
        try:
            await super().async_start_new_kernel(**kw)
        except BaseException:
            self._close_sockets(self.km)
            raise

    start_new_kernel = run_sync(async_start_new_kernel)  # papermill's execute() calls the sync one

    async def async_start_new_kernel_client(self) -> Any:
        km = self.km
        try:
            kc = await super().async_start_new_kernel_client()
        except BaseException:
            self._close_sockets(km)
            raise
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        kc.watchdog = Watchdog(self.inactivity_s, pid)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        if self.kc is not None and hasattr(self.kc, "watchdog"):
            self.kc.watchdog.reset()
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kw)
        except CellInactive as err:
            # nbclient leaves its kernel-alive poll running when a reply never comes: stop it, and
            # interrupt the kernel so that it is not shut down in the middle of a cell.
            for task in asyncio.all_tasks():
                if getattr(task.get_coro(), "__name__", "") == "_async_poll_kernel_alive":
                    task.cancel()
            with contextlib.suppress(Exception):
                await ensure_async(self.km.interrupt_kernel())
                await self.kc.shell_channel.get_msg(timeout=3)  # the interrupted cell's reply, if it comes
            raise CellInactive(err.seconds, cell_index, cell.source) from None

    execute_cell = run_sync(async_execute_cell)


class RobustEngine(NBClientEngine):
    """Papermill's nbclient engine, executing with :class:`RobustNotebookClient`."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        inactivity_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        return RobustNotebookClient(nb_man, inactivity_s=inactivity_timeout, **final_kwargs).execute()


papermill_engines.register(ENGINE_NAME, RobustEngine)
