"""Preparing training arrays and datasets: subsets by counts, synthetic data, label checks.

Building blocks shared by pretraining (``engine.build``), studies and probes; they take plain
values (arrays, counts, seeds), never a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from balfeat.data.imbalance import exponential_profile
from balfeat.errors import DataError


def dataset_targets(dataset: Dataset[Any]) -> np.ndarray:
    """The labels (N,) int64 of a dataset, from its ``.targets`` (the dataset contract).

    Raises:
        DataError: the dataset has no ``.targets``.
    """
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise DataError(
            f"{type(dataset).__name__} has no .targets; datasets must expose their labels as "
            "a .targets array (see docs/DESIGN.md)"
        )
    return np.asarray(targets, dtype=np.int64)


class ClassSubset(Dataset[Any]):
    """The samples of some classes of a dataset, relabelled 0..C'-1 in the given order.

    Args:
        dataset: any dataset with ``.targets``.
        classes: original labels to keep.
    """

    def __init__(self, dataset: Dataset[Any], classes: Sequence[int]) -> None:
        self.dataset = dataset
        self.classes = [int(c) for c in classes]
        targets = dataset_targets(dataset)
        remap = np.full(int(max(targets.max(initial=0), max(self.classes, default=0))) + 1, -1)
        remap[self.classes] = np.arange(len(self.classes))
        self.indices = np.flatnonzero(np.isin(targets, self.classes))
        self.targets = remap[targets[self.indices]].astype(np.int64)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, _ = self.dataset[int(self.indices[i])]
        return image, int(self.targets[i])


def subset_by_counts(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices keeping ``counts[c]`` random images of each class ``c``.

    Nested: each class's images are drawn in one seeded order (its own stream of ``seed``), and
    a class keeps the first ``counts[c]`` of that order. So for one seed the sets of an imbalance
    family share their images, a smaller count taking a subset of a larger one's, as the
    paper's nested sampling of the ImageNet-LT family: two sets differ only by the images the
    profile adds or removes, not by a fresh draw (a variance reduction for paired comparisons).

    Raises:
        DataError: a class has fewer images than asked for; a count negative or fractional; a
            label without a count.
    """
    labels = np.asarray(labels)
    bad = [(c, k) for c, k in enumerate(counts) if not float(k).is_integer() or k < 0]
    if bad:
        c, k = bad[0]
        raise DataError(f"subset_by_counts: counts[{c}]={k!r} must be a whole number >= 0")
    if labels.size and int(labels.max()) >= len(counts):
        raise DataError(
            f"subset_by_counts: {len(counts)} counts for labels up to {int(labels.max())}; the "
            "classes without a count would be dropped silently: give one count per class"
        )
    keep: list[np.ndarray] = []
    for c, k in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise DataError(
                f"class {c} has {len(idx)} images but the imbalance profile needs {k}; lower "
                "the images per class or the imbalance ratio"
            )
        order = np.random.default_rng([seed, c]).permutation(len(idx))  # class c's own stream
        keep.append(idx[order[: int(k)]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def exponential_subset(
    labels: np.ndarray, num_classes: int, imbalance_ratio: float, per_class: int, seed: int
) -> np.ndarray:
    """Indices of an exponential long-tailed subset (class ``c`` keeps ``n_c`` images).

    ``n_max`` is ``per_class`` (0 = the smallest class size) and ``n_c`` follows
    :func:`balfeat.data.imbalance.exponential_profile` (floor; every class >= 1 image).

    Raises:
        DataError: the ratio is impossible for ``n_max`` or a class is too small.
    """
    sizes = np.bincount(labels, minlength=num_classes)
    n_max = int(sizes.min()) if per_class <= 0 else min(per_class, int(sizes.min()))
    if n_max < 1:
        raise DataError(
            f"class(es) {np.flatnonzero(sizes == 0).tolist()[:10]} have no images; cannot build "
            "an imbalance profile"
        )
    return subset_by_counts(labels, exponential_profile(num_classes, n_max, imbalance_ratio), seed)


def synthetic_arrays(
    n: int, num_classes: int, image_size: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose class is visible (a class-specific bright bar) plus noise.

    Returns:
        images (N, H, W) for 1 channel or (N, H, W, C), labels (N,) int64.
    """
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    rng.shuffle(labels)
    images = rng.integers(0, 64, size=(n, image_size, image_size, channels), dtype=np.int64)
    band = max(1, image_size // num_classes)
    for c in range(num_classes):
        rows = slice((c * band) % image_size, (c * band) % image_size + band)
        images[labels == c, rows, :, :] += 160
    out = np.clip(images, 0, 255).astype(np.uint8)
    return (out[..., 0] if channels == 1 else out), labels


def check_not_empty(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise if the training set is empty or a class has no image (no "all data" fallback).

    Raises:
        DataError: naming ``where`` and the empty classes.
    """
    if len(labels) == 0:
        raise DataError(f"{where}: the training set is empty; use more images or fewer classes")
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise DataError(
            f"{where}: class(es) {empty.tolist()[:10]} have no training image (of {len(labels)} "
            f"images, {num_classes} classes); use more images (data.max_samples / "
            "data.per_class) or fewer classes"
        )
