"""The runner's papermill engine (adlib.cli.engine): no lost message can hang it, a silent cell fails.

The hang of issue 6 is a lost wake-up: a message sits in the socket while the client awaits a poll
that never fires. `FakeSocket` reproduces exactly that, deterministically: a poll without a timeout
never returns, a poll with one finds the message.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.channels import AsyncZMQSocketChannel

from adlib.cli.engine import CellInactive, SlicedChannel, Watchdog, process_cpu_seconds
from adlib.cli.reproduce import NotebookFailed, reproduce

from ..helpers import PARAMETERS, write_notebook


class FakeSocket:
    """A socket holding one message whose wake-up was lost: ``poll(None)`` sleeps for ever."""

    def __init__(self) -> None:
        self.polls: list[int | None] = []

    async def poll(self, timeout: int | None = None) -> int:
        self.polls.append(timeout)
        if timeout is None:
            await asyncio.Event().wait()  # never set: the lost wake-up
        return 1  # a fresh look finds the message


def channel(cls: type, socket: FakeSocket) -> AsyncZMQSocketChannel:
    ch = cls.__new__(cls)
    ch.socket = socket

    async def recv() -> dict:
        return {"msg_type": "execute_reply"}

    ch._recv = recv
    return ch


def test_stock_channel_hangs_on_a_lost_wakeup() -> None:
    """The failure mode itself: jupyter_client's get_msg(timeout=None) waits on one poll for ever."""
    ch = channel(AsyncZMQSocketChannel, FakeSocket())
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(ch.get_msg(), 1.0))


def test_sliced_channel_finds_a_message_whose_wakeup_was_lost() -> None:
    socket = FakeSocket()
    ch = channel(SlicedChannel, socket)
    msg = asyncio.run(asyncio.wait_for(ch.get_msg(), 5.0))
    assert msg == {"msg_type": "execute_reply"}
    assert None not in socket.polls  # every poll had a deadline


def test_watchdog_counts_messages_and_cpu_as_activity() -> None:
    dog = Watchdog(0.2, os.getpid())
    time.sleep(0.3)
    dog.touch()  # a message: activity
    dog.check()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.4:  # this process computes: activity, though silent
        pass
    dog.check()
    time.sleep(0.3)  # silent and idle
    with pytest.raises(CellInactive, match="no output, no reply and no kernel CPU"):
        dog.check()
    assert Watchdog(None).limit_s is None and Watchdog(0).limit_s is None  # off


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux-only")
def test_process_cpu_seconds_grows_with_work() -> None:
    before = process_cpu_seconds(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:
        pass
    assert process_cpu_seconds(os.getpid()) >= before + 0.1
    assert process_cpu_seconds(None) is None


def test_a_silent_cell_fails_with_notebook_and_cell_named_after_one_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_stuck.ipynb", "x = 1", "import time; time.sleep(60)", parameters=PARAMETERS)
    t0 = time.perf_counter()
    with pytest.raises(NotebookFailed) as info:
        reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder, inactivity_timeout=2)
    assert time.perf_counter() - t0 < 50  # two attempts of ~2 s each, not the 60 s sleep
    message = str(info.value)
    # cell 3 of the executed copy: papermill inserts the injected parameters after cell 0
    assert "00_stuck.ipynb" in message and "cell 3 (import time; time.sleep(60))" in message
    assert "no output, no reply and no kernel CPU" in message and "gave up after 2 attempts" in message
    assert "\n" not in message
    assert capsys.readouterr().out.count("running the notebook again") == 1


def test_a_busy_silent_cell_is_not_a_hang(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("kernel CPU is read from /proc")
    folder = tmp_path / "notebooks"
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 5: pass\nprint('done')"
    write_notebook(folder / "00_busy.ipynb", busy, parameters=PARAMETERS)
    [done] = reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder, inactivity_timeout=2)
    assert "done" in done.read_text()


def test_kernels_draw_inline_whatever_the_callers_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke tests must run what users run: an explorer drawing an inline figure in an Output widget."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    folder = tmp_path / "notebooks"
    explorer = (
        "import ipywidgets as widgets, matplotlib, matplotlib.pyplot as plt, numpy as np\n"
        "print(matplotlib.get_backend())\n"
        "def f(a=True, k=2):\n"
        "    plt.figure(figsize=(2, 2)); plt.imshow(np.random.rand(8, 8)); plt.show()\n"
        "widgets.interact(f, a=True, k=widgets.IntSlider(value=2, min=1, max=4));"
    )
    write_notebook(folder / "00_explorer.ipynb", explorer, parameters=PARAMETERS)
    [done] = reproduce("ci", out_dir=tmp_path / "results", kernel="python3", notebook_dir=folder)
    nb = nbformat.read(done, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "inline" in text
    widget_outputs = [
        o
        for state in nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
        for o in state["state"].get("outputs", [])
    ]
    assert any("image/png" in o.get("data", {}) for o in widget_outputs)  # the figure, inside the explorer


def test_ipc_sockets_are_absolute_and_unique() -> None:
    """A client and a kernel in different folders must find each other's sockets (issue 6, stress harness)."""
    from adlib.cli.engine import RobustKernelManager

    a, b = RobustKernelManager(kernel_name="python3"), RobustKernelManager(kernel_name="python3")
    if a.transport != "ipc":
        pytest.skip("IPC transport is used on POSIX only")
    assert os.path.isabs(a.ip) and a.ip != b.ip


def test_a_deep_runtime_folder_falls_back_to_a_short_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unix socket path holds at most 107 bytes: a deep JUPYTER_RUNTIME_DIR must not break the kernel."""
    from adlib.cli import engine

    deep = tmp_path / ("d" * 60) / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(deep))
    monkeypatch.setattr(engine.tempfile, "gettempdir", lambda: "/tmp")
    prefix = engine._ipc_prefix()
    assert prefix is not None and prefix.startswith("/tmp/adlib-") and len(prefix) + 8 <= engine.IPC_PATH_MAX
    short = tempfile.mkdtemp(dir="/tmp")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", short)
    assert engine._ipc_prefix().startswith(f"{short}/adlib-")  # the runtime folder first, where it fits
    os.rmdir(short)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(deep))
    monkeypatch.setattr(engine.tempfile, "gettempdir", lambda: str(deep))
    assert engine._ipc_prefix() is None  # nothing fits: TCP
    if os.name == "posix":
        assert engine.RobustKernelManager(kernel_name="python3").transport == "tcp"


def test_a_kernel_that_fails_to_start_leaves_no_open_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI hung for 85 minutes: a failed start left a socket whose context, garbage-collected in a later test,
    waited for ever in Context.term. The failure is forced with a socket path longer than unix allows."""
    import gc

    import zmq

    from adlib.cli import engine

    monkeypatch.setattr(engine, "IPC_PATH_MAX", 10_000)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("d" * 120)))
    before = {id(o) for o in gc.get_objects() if issubclass(type(o), zmq.Context) and not o.closed}
    write_notebook(tmp_path / "nb" / "00_a.ipynb", "print(1)", parameters=PARAMETERS)
    with pytest.raises(NotebookFailed, match="before the first cell: ZMQError"):
        reproduce("ci", out_dir=tmp_path / "out", kernel="python3", notebook_dir=tmp_path / "nb")
    gc.collect()
    left = [o for o in gc.get_objects() if issubclass(type(o), zmq.Context) and not o.closed and id(o) not in before]
    assert left == []


def test_a_kernel_started_elsewhere_is_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nbclient with our kernel manager, the kernel's folder differing from the client's (as in the stress test)."""
    from nbclient import NotebookClient

    from adlib.cli.engine import RobustKernelManager

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os; print(os.getcwd())")]
    (tmp_path / "kernel_here").mkdir()
    monkeypatch.chdir(tmp_path)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        kernel_manager_class=RobustKernelManager,
        timeout=60,
        resources={"metadata": {"path": str(tmp_path / "kernel_here")}},
    )
    client.execute()
    assert "kernel_here" in nb.cells[0].outputs[0]["text"]
