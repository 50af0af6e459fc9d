"""Tests run torch single-threaded: on the 2-core CI machine, multi-threaded kernels of tiny
tensors are slower, not faster (measured: up to 5x on a loaded machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
