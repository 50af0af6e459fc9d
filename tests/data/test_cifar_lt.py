"""CIFAR-LT protocol: counts of the six standard sets, the seeded selection, the folder loader."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest

from balfeat.data.cifar_lt import STANDARD_TOTALS, load_cifar_lt, lt_indices
from balfeat.data.imbalance import exponential_counts
from balfeat.errors import BalfeatError


@pytest.mark.parametrize(("name", "ratio"), sorted(STANDARD_TOTALS))
def test_standard_totals(name: str, ratio: int) -> None:
    c, n_max = (10, 5000) if name == "cifar10" else (100, 500)
    counts = exponential_counts(c, n_max, ratio)
    assert sum(counts) == STANDARD_TOTALS[(name, ratio)]
    assert counts[0] == n_max and counts[-1] == n_max // ratio
    assert all(a >= b for a, b in itertools.pairwise(counts))


def test_published_figures_literal() -> None:
    # literal numbers, independent of the table in the module
    assert exponential_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(exponential_counts(10, 5000, 100)) == 12406
    assert sum(exponential_counts(100, 500, 100)) == 10847
    assert sum(exponential_counts(10, 5000, 10)) == 20431
    assert sum(exponential_counts(100, 500, 10)) == 19573


def test_selection_is_the_seeded_global_shuffle() -> None:
    labels = np.repeat(np.arange(10), 50)
    np.random.RandomState(7).shuffle(labels)  # file order not sorted by class
    keep = lt_indices(labels, 10, seed=0)
    # the protocol's own procedure, with the legacy global RNG
    np.random.seed(0)
    expect = []
    for c, n in zip(range(10), exponential_counts(10, 50, 10), strict=False):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expect.append(idx[:n])
    assert np.array_equal(keep, np.concatenate(expect))
    assert not np.array_equal(keep, lt_indices(labels, 10, seed=1))


def test_unbalanced_input_and_bad_ratio_raise() -> None:
    with pytest.raises(BalfeatError):
        lt_indices(np.array([0, 0, 1]), 10)
    with pytest.raises(BalfeatError):
        exponential_counts(10, 5000, 0.5)


def test_load_from_torchvision_layout(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):  # 5 batches x 20 = 100 images, 10 per class
        labels = list(np.repeat(np.arange(10), 2)[rng.permutation(20)])
        data = rng.integers(0, 255, (20, 3072), dtype=np.uint8)
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    d = load_cifar_lt("cifar10", tmp_path, 10)
    counts = np.bincount(d.train_y, minlength=10).tolist()
    assert counts == exponential_counts(10, 10, 10) and counts[-1] == 1
    assert d.test_x.shape[0] == 10 and d.train_x.shape[1:] == (32, 32, 3)


def test_lt_indices_refuses_a_label_column() -> None:
    """Before: (N, 1) labels were flattened by np.unique and a subset was returned silently."""
    with pytest.raises(BalfeatError, match=r"1-D integer labels \(N,\), got shape \(30, 1\)"):
        lt_indices(np.repeat(np.arange(3), 10)[:, None], 10)
