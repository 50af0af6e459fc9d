"""Data preparation: the exponential profile (floor), impossible ratios, empty sets, subsets."""

from __future__ import annotations

import numpy as np
import pytest

from balfeat.data.datasets import ArrayDataset
from balfeat.data.imbalance import achieved_ratio, exponential_profile
from balfeat.data.prepare import (
    ClassSubset,
    check_not_empty,
    dataset_targets,
    exponential_subset,
    subset_by_counts,
    synthetic_arrays,
)
from balfeat.engine.build import build_train_dataset
from balfeat.engine.config import load_config
from balfeat.errors import DataError


def test_exponential_profile_reproduces_cifar10_lt_100() -> None:
    counts = exponential_profile(10, 5000, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406
    assert achieved_ratio(counts) == 100.0


def test_impossible_ratio_names_the_largest_possible() -> None:
    with pytest.raises(DataError, match="largest possible ratio is 115"):
        exponential_profile(10, 115, 1000)
    assert min(exponential_profile(10, 115, 115)) == 1


def test_achieved_ratio_is_the_real_one() -> None:
    counts = exponential_profile(10, 7, 5)
    assert achieved_ratio(counts) == max(counts) / min(counts)


def test_exponential_subset_keeps_the_profile() -> None:
    labels = np.repeat(np.arange(4), 20)
    keep = exponential_subset(labels, 4, 10.0, 0, seed=0)
    assert np.bincount(labels[keep], minlength=4).tolist() == exponential_profile(4, 20, 10.0)
    assert np.array_equal(keep, exponential_subset(labels, 4, 10.0, 0, seed=0))


def test_subset_by_counts_refuses_too_small_class() -> None:
    labels = np.repeat(np.arange(3), 2)
    with pytest.raises(DataError, match="class 1 has 2 images"):
        subset_by_counts(labels, [1, 3, 1], seed=0)


def test_empty_training_set_is_an_error_not_all_data() -> None:
    with pytest.raises(DataError, match="empty"):
        check_not_empty(np.zeros(0, dtype=np.int64), 10, "here")
    with pytest.raises(DataError, match=r"class\(es\) \[2\]"):
        check_not_empty(np.array([0, 1, 0]), 3, "here")
    # max_samples smaller than the number of classes leaves classes empty: an error
    cfg = load_config(
        None,
        [
            "data.dataset=synthetic",
            "data.synthetic_size=64",
            "data.num_classes=10",
            "data.max_samples=5",
            "data.image_size=8",
        ],
    )
    with pytest.raises(DataError, match="no training image"):
        build_train_dataset(cfg)


def test_class_subset_relabels_and_targets() -> None:
    images, labels = synthetic_arrays(30, 3, 8, 1, seed=0)
    ds = ArrayDataset(images, labels, num_classes=3)
    sub = ClassSubset(ds, [2, 0])
    assert set(dataset_targets(sub).tolist()) == {0, 1}
    assert len(sub) == int((labels != 1).sum())
    _, y = sub[0]
    assert y == int(sub.targets[0])


def test_subset_by_counts_refuses_bad_counts() -> None:
    """Before: a count list shorter than the classes dropped the rest silently; -1 ended in a
    numpy 'negative dimensions' error."""
    labels = np.repeat(np.arange(3), 5)
    with pytest.raises(DataError, match="2 counts for labels up to 2"):
        subset_by_counts(labels, [5, 5], 0)
    with pytest.raises(DataError, match=r"counts\[1\]=-1"):
        subset_by_counts(labels, [5, -1, 5], 0)
    with pytest.raises(DataError, match=r"counts\[0\]=2.5"):
        subset_by_counts(labels, [2.5, 1, 1], 0)  # type: ignore[list-item]
    assert len(subset_by_counts(labels, [5, 0, 2], 0)) == 7


def test_subset_by_counts_is_nested_across_counts_for_one_seed() -> None:
    """A family's sets share their images: smaller counts keep a subset of larger ones."""
    labels = np.repeat(np.arange(4), 50)
    big = set(subset_by_counts(labels, [50, 40, 30, 20], seed=3).tolist())
    small = set(subset_by_counts(labels, [10, 20, 30, 40], seed=3).tolist())
    mid = set(subset_by_counts(labels, [25, 25, 25, 25], seed=3).tolist())
    for c in range(4):
        in_c = {int(i) for i in np.flatnonzero(labels == c)}
        a, b, m = big & in_c, small & in_c, mid & in_c
        assert a <= b or b <= a  # the smaller of the two is a prefix of the same order
        assert m <= a or a <= m
    assert (
        subset_by_counts(labels, [10] * 4, seed=3).tolist()
        != subset_by_counts(labels, [10] * 4, seed=4).tolist()
    )  # another seed, another draw
