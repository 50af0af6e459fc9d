"""Engine tests run torch single-threaded: on a contended 2-core machine, multi-threaded
kernels of tiny tensors are slower, not faster."""

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
