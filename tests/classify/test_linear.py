"""classify.linear: best-epoch bookkeeping as main_lincls.py, the non-finite guard."""

from __future__ import annotations

import pytest
import torch

from balfeat.classify.linear import BestEpoch, ProbeConfig, check_finite, train_linear_on_features
from balfeat.errors import TrainingError


def test_best_epoch_keeps_the_first_maximum_and_copies_state() -> None:
    best = BestEpoch()
    w = torch.zeros(2)
    assert best.update(1, 50.0, torch.ones(3, 2), {"fc": {"w": w}})
    w += 1  # the kept state is a copy, not a view of the live weights
    assert not best.update(2, 50.0, torch.zeros(3, 2), {"fc": {"w": w}})  # a tie: first wins
    assert best.epoch == 1 and best.state["fc"]["w"].tolist() == [0.0, 0.0]
    assert best.update(3, 60.0, torch.zeros(3, 2), {"fc": {"w": w}})
    assert best.epoch == 3 and best.top1 == 60.0 and best.state["fc"]["w"].tolist() == [1.0, 1.0]


def test_check_finite_names_the_protocol_and_epoch() -> None:
    check_finite({"loss": 1.0, "lr": 0.1}, "fast probe", 0, "hint")
    with pytest.raises(TrainingError, match=r"fast probe: non-finite loss at epoch 3 .*hint"):
        check_finite({"loss": float("nan"), "lr": 0.1}, "fast probe", 2, "hint")


def test_nan_features_stop_the_probe_with_a_clear_error() -> None:
    x = torch.randn(20, 4)
    x[3, 1] = float("nan")
    y = torch.arange(20) % 2
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1"):
        train_linear_on_features(x, y, x[:4], y[:4], 2, ProbeConfig(epochs=2, lr=1.0))
