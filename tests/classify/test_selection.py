"""Where a probe chooses (``select_on``): the carved selection split, τ and LWS chosen on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from balfeat.classify.decoupled import lws
from balfeat.classify.linear import ProbeConfig, train_linear_on_features
from balfeat.classify.probe import tau_choice
from balfeat.classify.selection import (
    SELECTED_ON_TEST,
    IndexSubset,
    carve_selection,
    choice_label,
)


def test_carve_is_seeded_disjoint_and_recorded() -> None:
    labels = np.repeat(np.arange(4), [50, 20, 3, 1])
    a, b = carve_selection(labels, 0.1, seed=3), carve_selection(labels, 0.1, seed=3)
    assert np.array_equal(a.select, b.select) and a.record() == b.record()
    other = carve_selection(labels, 0.1, seed=4)
    assert not np.array_equal(a.select, other.select)
    assert a.record()["indices_sha256"] != other.record()["indices_sha256"]
    # disjoint, and together every training image
    assert not set(a.select) & set(a.train)
    assert sorted([*a.select, *a.train]) == list(range(len(labels)))
    # 10% per class, at least one, none from a class of one image (it must stay trainable)
    assert a.per_class == [5, 2, 1, 0]
    assert np.bincount(labels[a.select], minlength=4).tolist() == a.per_class
    rec = a.record()
    assert rec["seed"] == 3 and rec["per_class"] == [5, 2, 1, 0] and rec["images"] == 8


def test_index_subset_keeps_labels_and_classes() -> None:
    class Data(torch.utils.data.Dataset):
        targets = np.array([0, 1, 2, 1])

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[int, int]:
            return i * 10, int(self.targets[i])

    sub = IndexSubset(Data(), np.array([1, 3]))
    assert len(sub) == 2 and sub[1] == (30, 1)
    assert sub.targets.tolist() == [1, 1] and sub.num_classes == 3


def test_label_only_on_test() -> None:
    assert choice_label("test") == SELECTED_ON_TEST
    assert "test" not in choice_label("val") and "test" not in choice_label("last")


def _head_heavy() -> nn.Linear:
    """Class 0's weights have norm 2, class 1's 0.5: tau-norm and LWS move x=(1, 2.5)-like
    points from class 0 to class 1."""
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
        fc.bias.zero_()
    return fc


def test_tau_chosen_on_val_differs_from_test() -> None:
    fc, counts = _head_heavy(), [100, 10]
    x = torch.tensor([[1.0, 1.5]])
    on_test, on_val = torch.tensor([1]), torch.tensor([0])  # the two lists disagree
    test_chosen = tau_choice(fc, x, on_test, None, counts, "thirds", "best")
    val_chosen = tau_choice(fc, x, on_val, (x, on_test), counts, "thirds", "best")
    # plain classifier says 0; from tau 0.8 the normalised one says 1 (4^(1-tau) < 1.5)
    assert test_chosen["best_tau"] == pytest.approx(0.8) and test_chosen["best_top1"] == 100.0
    assert val_chosen["best_tau"] == 0.0 and val_chosen["best_top1"] == 0.0  # measured on test
    assert val_chosen["sweep"] == test_chosen["sweep"]  # the reported sweep is the test one
    assert val_chosen["select_sweep"][0]["top1"] == 100.0  # tau 0 on the selection list
    last = tau_choice(fc, x, on_val, (x, on_test), counts, "thirds", "last")
    assert last["best_tau"] is None and len(last["sweep"]) == 11  # nothing picked


def test_lws_epoch_chosen_on_val_differs_from_test() -> None:
    fc = _head_heavy()
    xtr = torch.tensor([[3.0, 0.0]] * 8 + [[1.0, 2.5]] * 8)
    ytr = torch.tensor([0] * 8 + [1] * 8)
    x = torch.tensor([[1.0, 2.5], [3.0, 0.0]])
    cfg = ProbeConfig(epochs=20, lr=0.05, momentum=0.0, milestones=[], batch_size=16)
    _, val_chosen = lws(fc, xtr, ytr, x, torch.tensor([0, 0]), cfg, "cpu")
    _, test_chosen = lws(fc, xtr, ytr, x, torch.tensor([1, 0]), cfg, "cpu")
    assert val_chosen.best_epoch == 1  # before the scales move the point to class 1
    assert test_chosen.best_epoch > 1  # once they have
    assert not torch.equal(val_chosen.classifier.scales, test_chosen.classifier.scales)


def test_keep_last_chooses_nothing() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    cfg = ProbeConfig(epochs=6, lr=0.5, batch_size=8)
    best = train_linear_on_features(x, y, x, 1 - y, 2, cfg)  # the best epoch on flipped labels
    last = train_linear_on_features(x, y, x, 1 - y, 2, cfg, keep="last")
    assert last.best_epoch == 6
    assert last.best_top1 == last.history[-1]["val_top1"]
    assert best.best_top1 >= last.best_top1
