"""Weighted kNN against a slow loop."""

from __future__ import annotations

import math

import pytest
import torch

from balfeat.errors import BalfeatError
from balfeat.evaluation.knn import knn_accuracy, knn_predict


def _slow_knn(train, labels, test, C, k, T):
    out = torch.zeros(test.shape[0], C, dtype=torch.float64)
    for i in range(test.shape[0]):
        sims = []
        for j in range(train.shape[0]):
            a, b = test[i].double(), train[j].double()
            sims.append((float(a @ b / (a.norm() * b.norm())), j))
        sims.sort(key=lambda s: -s[0])
        for s, j in sims[:k]:
            out[i, int(labels[j])] += math.exp(s / T)
    return out


def test_knn_equals_slow_loop() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(40, 8, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    test = torch.randn(7, 8, generator=g)
    fast = knn_predict(train, labels, test, 4, k=5, T=0.5, chunk=3)
    slow = _slow_knn(train, labels, test, 4, 5, 0.5)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-5)


def test_knn_accuracy_on_separable_clusters_and_errors() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(3) * 5
    labels = torch.arange(3).repeat_interleave(10)
    train = centres[labels] + 0.1 * torch.randn(30, 3, generator=g)
    test = centres[torch.tensor([0, 1, 2])] + 0.1 * torch.randn(3, 3, generator=g)
    assert knn_accuracy(train, labels, test, torch.tensor([0, 1, 2]), 3, k=100) == 100.0
    with pytest.raises(BalfeatError):
        knn_predict(train[:0], labels[:0], test, 3)
    with pytest.raises(BalfeatError):
        knn_predict(train, labels, test, 3, k=0)


def test_knn_monitor_runs_every_n_epochs_and_restores_train_mode() -> None:
    from torch.utils.data import TensorDataset

    from balfeat.evaluation.knn import KNNMonitor

    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 4, generator=g)
    y = torch.arange(30) % 3
    x[torch.arange(30), y] += 4.0  # separable
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[0].bias.zero_()
    net.train()
    mon = KNNMonitor(TensorDataset(x, y), TensorDataset(x, y), 3, every=2, k=3)
    assert mon(net, 1, 5, torch.device("cpu")) == {}
    out = mon(net, 2, 5, torch.device("cpu"))
    assert out["knn_top1"] > 90.0 and net.training
    assert "knn_top1" in mon(net, 5, 5, torch.device("cpu"))  # the last epoch always
    with pytest.raises(BalfeatError):
        KNNMonitor(TensorDataset(x, y), TensorDataset(x, y), 3, every=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: knn_predict(torch.randn(5, 4), torch.arange(4), torch.randn(2, 4), 3),
            r"train_labels must be integer class ids of shape \(5,\)",
        ),
        (
            lambda: knn_predict(torch.randn(5, 4), torch.arange(5) % 3, torch.randn(2, 5), 3),
            "different dims",
        ),
        (
            lambda: knn_predict(torch.randn(5, 4), torch.arange(5), torch.randn(2, 4), 3),
            r"lie in \[0, 3\), got \[0, 4\]",
        ),
        (
            lambda: knn_predict(torch.randn(5, 4), torch.arange(5) % 3.0, torch.randn(2, 4), 3),
            "float32",
        ),
        (
            lambda: knn_predict(torch.randn(5, 4), torch.zeros(5).long(), torch.randn(2, 4), 0),
            "num_classes=0",
        ),
        (
            lambda: knn_predict(
                torch.randn(5, 4), torch.arange(5) % 3, torch.randn(2, 4), 3, T=math.nan
            ),
            "finite T",
        ),
        (
            lambda: knn_accuracy(
                torch.randn(5, 4), torch.arange(5) % 3, torch.randn(2, 4), torch.arange(3), 3
            ),
            r"test_labels must have shape \(2,\)",
        ),
    ],
)
def test_bad_knn_inputs_are_named(call: object, match: str) -> None:
    """Before: torch IndexError/RuntimeError deep in the vote, NaN scores for T=nan, float
    labels voted silently."""
    with pytest.raises(BalfeatError, match=match):
        call()  # type: ignore[operator]
