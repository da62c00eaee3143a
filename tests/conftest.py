"""Fixtures shared by several test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives JupyterLab in headless Chromium (deselect with -m 'not browser')"
    )
    share_cores_between_workers()


def share_cores_between_workers() -> None:
    """Under pytest-xdist, each worker and the notebook kernels it starts get cores / workers threads.

    Two workers with two threads each on two cores would fight over them; OMP_NUM_THREADS reaches the kernels
    (they inherit the environment). A value the user set is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster, and immune to other jobs on the machine's two cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache ($ADLIB_CACHE) for every notebook run of a session, as in a real run."""
    return tmp_path_factory.mktemp("feature_cache")
