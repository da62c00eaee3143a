"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives JupyterLab in headless Chromium (deselect with -m 'not browser')"
    )


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
