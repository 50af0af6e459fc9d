"""Thread setup: the number of torch threads a run uses."""

from __future__ import annotations

import os

import pytest
import torch

from balfeat.device import configure_threads


def test_configure_threads_sets_and_returns_the_number(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
        assert configure_threads(0) == 1  # a busy machine: one thread
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert configure_threads(0) == 2 and torch.get_num_threads() == 2  # idle: every core
    finally:
        torch.set_num_threads(before)
