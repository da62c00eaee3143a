"""The explorers as people use them: JupyterLab in headless Chromium, Run All, then move a control.

A module-scoped fixture starts JupyterLab on localhost over a temporary folder that holds a copy of
notebook 00 whose `parameters` cell says PROFILE = "ci" and sends tables and figures to temporary
folders (never the repository's results/ and figures/); its kernels draw inline (MPLBACKEND unset)
and share the session's feature cache ($ADLIB_CACHE) with the papermill smoke tests. The test opens
the notebook in Debian's `chromium` driven by Playwright (no browser download), runs every cell from
the Run menu, checks that no cell raised, moves the explorer's sigma slider with the keyboard and
checks that the explorer's image changes. Without chromium, playwright or a JupyterLab that starts,
the test skips and says what to install. Deselect it with `-m "not browser"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adlib.runtime import REPO_ROOT

pytestmark = pytest.mark.browser

NOTEBOOK = REPO_ROOT / "notebooks" / "00_data_and_metrics.ipynb"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
SERVER_START_S = 120  # a loaded two-core machine needs tens of seconds to start JupyterLab
RUN_ALL_S = 420  # notebook 00 at PROFILE="ci": 1-2 minutes under papermill, more behind a browser
CONTROL_S = 90  # one redraw of the explorer
# Settings of a fresh JupyterLab user: every cell in the DOM (the default windowing leaves
# off-screen cells out of layout), no news or update checks (no network), no toasts over the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}
KERNEL_IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'
# The toolbar's indicator says idle before the kernel is connected (a Run All then asks for a kernel):
# ready when the status bar names the kernel as idle and every cell of the notebook is in the page.
NOTEBOOK_READY = """(n) => {
  const status = document.querySelector('.jp-StatusBar-TextItem[title^="Change kernel"]');
  const text = status === null ? "" : status.textContent;
  return !text.includes("No Kernel") && /\\| Idle$/.test(text.trim())
    && document.querySelectorAll(".jp-NotebookPanel .jp-Cell").length === n;
}"""
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]  # root in a container, small /dev/shm
EXPLORER = ".widget-interact"
EXPLORER_IMG = f"{EXPLORER} .widget-output img"


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ci_copy(notebook: Path, dest: Path, out_dir: Path, figures_dir: Path) -> Path:
    """Copy `notebook` into `dest` with its parameters cell set to PROFILE="ci" and temporary output folders."""
    nb = json.loads(notebook.read_text())
    [cell] = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    values = {"PROFILE": "ci", "OUT_DIR": str(out_dir), "FIGURES_DIR": str(figures_dir)}
    lines, seen = [], set()
    for line in "".join(cell["source"]).splitlines():
        name = line.split("=", 1)[0].strip()
        if name in values:
            seen.add(name)
            line = f"{name} = {values[name]!r}"
        lines.append(line)
    assert seen == set(values), f"{notebook.name}: parameters cell lacks {sorted(set(values) - seen)}"
    cell["source"] = "\n".join(lines)
    path = dest / notebook.name
    path.write_text(json.dumps(nb, indent=1))
    return path


@dataclass
class Lab:
    url: str  # http://127.0.0.1:<port>/
    token: str
    notebook: str  # path of the notebook copy relative to the server's root
    n_cells: int
    out_dir: Path
    figures_dir: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(
            f"{self.url}api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None


def log_tail(log: Path, n: int = 1) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    return " | ".join(lines[-n:]) or "(no output)"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium: apt-get install chromium (Debian) to run the explorer browser test")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("no playwright: pip install playwright (uses the system chromium, no `playwright install`)")
    with sync_playwright() as pw:  # before JupyterLab starts: a browser that cannot run skips at once
        try:
            pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS).close()
        except Error as err:
            pytest.skip(f"{path} does not start under playwright: {str(err).strip().splitlines()[0]}")
    return path


@pytest.fixture(scope="module")
def lab(chromium: str, tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Lab]:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.skip("no jupyterlab: pip install -r requirements.txt to run the explorer browser test")
    tmp = tmp_path_factory.mktemp("browser")
    root, out_dir, figures_dir, settings = tmp / "lab", tmp / "results", tmp / "figures", tmp / "lab-settings"
    root.mkdir()
    notebook = ci_copy(NOTEBOOK, root, out_dir, figures_dir)
    for rel, values in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "ADLIB_OUTPUTS_LOG")}
    env.update(
        ADLIB_CACHE=str(shared_cache),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),  # no user config (a password, another root) applies
        PYTHONUNBUFFERED="1",
    )
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    n_cells = len(json.loads(notebook.read_text())["cells"])
    server = Lab(f"http://127.0.0.1:{port}/", token, notebook.name, n_cells, out_dir, figures_dir, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"JupyterLab did not start (exit {proc.returncode}): {log_tail(log)}")
            try:
                server.api("status")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.skip(f"JupyterLab did not answer on /api/status within {SERVER_START_S} s: {log_tail(log)}")
                time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:
            try:  # kernels run in sessions of their own: shut them down through the server
                for kernel in server.api("kernels"):  # type: ignore[union-attr]
                    server.api(f"kernels/{kernel['id']}", method="DELETE")
            except (urllib.error.URLError, OSError):
                pass
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# Done when every code cell shows an execution count and the kernel is idle; stops early on an error
# output or a dialog (which would wait for a click for ever).
RUN_ALL_DONE = """([idle, stderr]) => {
  if ([...document.querySelectorAll(stderr)].some(e => e.textContent.includes("Traceback"))) return "error";
  const dialog = document.querySelector(".jp-Dialog");
  if (dialog !== null) return "dialog: " + dialog.innerText.replace(/\\s+/g, " ");
  const prompts = [...document.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")];
  const done = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
  return done && document.querySelector(idle) !== null ? "done" : false;
}"""
IMG_CHANGED = """([sel, old]) => {
  const img = document.querySelector(sel);
  return img !== null && img.complete && img.src.startsWith("data:image") && img.src !== old;
}"""


def errors_shown(page) -> list[str]:  # noqa: ANN001 - playwright Page
    return [t for t in page.locator(STDERR).all_inner_texts() if "Traceback" in t]


def test_explorer_redraws_when_a_control_moves(lab: Lab, chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    t0, times = time.monotonic(), {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{lab.url}lab/tree/{lab.notebook}?token={lab.token}")
            page.wait_for_function(NOTEBOOK_READY, arg=lab.n_cells, timeout=SERVER_START_S * 1000, polling=500)
            times["notebook open"] = time.monotonic() - t0

            # Run > Run All Cells, as a user does.
            page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
            outcome = page.wait_for_function(
                RUN_ALL_DONE, arg=[KERNEL_IDLE, STDERR], timeout=RUN_ALL_S * 1000, polling=1000
            ).json_value()
            assert outcome == "done" and not errors_shown(page), "\n\n".join([outcome, *errors_shown(page)])
            assert sorted(lab.figures_dir.glob("00_*_ci.png")), "the notebook wrote no figure to its temporary folder"
            times["run all"] = time.monotonic() - t0 - sum(times.values())

            explorer = page.locator(EXPLORER)
            img = page.locator(EXPLORER_IMG)
            img.wait_for(timeout=CONTROL_S * 1000)
            before = img.get_attribute("src")
            assert before and before.startswith("data:image/png;base64,")

            # Move the sigma slider three steps to the right with the keyboard (4 -> 7).
            sigma = explorer.locator(".widget-slider", has=page.locator(".widget-label", has_text="sigma"))
            readout = sigma.locator(".widget-readout")
            start = readout.inner_text()
            sigma.locator(".noUi-handle").focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "([el, v]) => el.textContent.trim() !== v", arg=[readout.element_handle(), start], timeout=10_000
            )
            assert float(readout.inner_text()) > float(start)
            page.wait_for_function(IMG_CHANGED, arg=[EXPLORER_IMG, before], timeout=CONTROL_S * 1000)
            page.locator(KERNEL_IDLE).wait_for(timeout=CONTROL_S * 1000)  # the last redraw is done
            after = page.locator(EXPLORER_IMG).get_attribute("src")
            assert after and after.startswith("data:image/png;base64,") and after != before
            assert not errors_shown(page), "\n\n".join(errors_shown(page))
            times["redraw"] = time.monotonic() - t0 - sum(times.values())
            print("explorer browser test:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
        except BaseException:
            shot = tmp_path / "explorer-failure.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}; JupyterLab log: {lab.log}")
            raise
        finally:
            browser.close()
