"""CIFAR-10-LT / CIFAR-100-LT as the common long-tailed protocol builds them.

The protocol (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
Loss", NeurIPS 2019, https://arxiv.org/abs/1906.07413, class ``IMBALANCECIFAR10/100`` of their
public code, reused by BCL, PaCo/GPaCo and TSC): with ``n_max = 5000`` (CIFAR-10) or ``500``
(CIFAR-100) training images per class and imbalance ratio ``r``, class ``i`` (by label index)
keeps ``n_i = int(n_max * (1/r) ** (i / (C - 1)))`` images. Which images: the legacy NumPy
global RNG is seeded once with 0, then for each class in increasing order the class's indices
(file order) are shuffled in place with ``np.random.shuffle`` and the first ``n_i`` are kept.
This module reproduces that selection with a private ``np.random.RandomState(seed)``, which
draws the same stream as ``np.random.seed(seed)`` + ``np.random.shuffle``. The test set is
unchanged (balanced).

The counts are :func:`balfeat.data.imbalance.exponential_counts` (the one exponential profile:
``1/r`` as the base, ``int`` truncation — the base matters: ``r ** (-i/(C-1))`` can round
differently).
"""

from __future__ import annotations

import os

import numpy as np

from balfeat.data.imbalance import exponential_counts
from balfeat.data.sources import ImageData, load_torchvision_layout
from balfeat.errors import BalfeatError

STANDARD_RATIOS: tuple[int, ...] = (100, 50, 10)

# Train-set sizes of the six standard sets (computed by the protocol above; the r=100 figures
# 12,406 and 10,847 are the ones the papers quote).
STANDARD_TOTALS: dict[tuple[str, int], int] = {
    ("cifar10", 100): 12406,
    ("cifar10", 50): 13996,
    ("cifar10", 10): 20431,
    ("cifar100", 100): 10847,
    ("cifar100", 50): 12608,
    ("cifar100", 10): 19573,
}


def lt_indices(labels: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """Training indices kept by the protocol, class by class (class 0's first).

    Args:
        labels: balanced training labels in file order. Shape: (N,).
        ratio: imbalance ratio.
        seed: the NumPy seed (protocol: 0).

    Returns:
        Indices into ``labels``. Shape: (sum n_i,).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise BalfeatError(
            f"lt_indices needs 1-D integer labels (N,), got shape {labels.shape} {labels.dtype}"
        )
    classes = np.unique(labels)
    per_class = [int((labels == c).sum()) for c in classes]
    if len(set(per_class)) != 1:
        raise BalfeatError(
            f"CIFAR-LT expects a balanced training set, got class sizes {sorted(set(per_class))}"
        )
    counts = exponential_counts(len(classes), len(labels) // len(classes), ratio)
    rng = np.random.RandomState(seed)
    keep = []
    for c, n in zip(classes, counts, strict=False):
        idx = np.where(labels == c)[0]
        rng.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep)


def load_cifar_lt(
    name: str, root: str | os.PathLike[str], ratio: float, seed: int = 0
) -> ImageData:
    """CIFAR-10-LT / CIFAR-100-LT from torchvision's folder layout.

    Args:
        name: ``cifar10`` or ``cifar100``.
        root: the folder torchvision was given as ``root``.
        ratio: imbalance ratio (standard: 100, 50, 10).
        seed: protocol seed (0).

    Returns:
        :class:`ImageData` with the long-tailed train set and the full test set.
    """
    data = load_torchvision_layout(name, root)
    keep = lt_indices(data.train_y, ratio, seed)
    return data._replace(train_x=data.train_x[keep], train_y=data.train_y[keep])
