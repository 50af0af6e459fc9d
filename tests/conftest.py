"""Tests run torch single-threaded: on the 2-core CI machine, multi-threaded kernels of tiny
tensors are slower, not faster (measured: up to 5x on a loaded machine). Fixtures shared by
test folders live here too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def live_pid() -> Iterator[int]:
    """The pid of a live process (another balfeat "holding" a folder's lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        yield proc.pid
    finally:
        proc.communicate(b"")
