"""The online kNN monitor of ``balfeat pretrain`` (``run.knn_every``): which held-out images it
scores, read from the config.

The monitor itself is a study's (:func:`balfeat.evaluation.knn.knn_monitor`): a memory of about
200 labelled images and 200 query images, scored every ``run.knn_every`` epochs and on the last.
Both come from images the run never trains on (the dataset's test or validation images), as two
disjoint class-balanced subsets, so a long-tailed training set is judged on every class alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from balfeat.data import catalog
from balfeat.data.prepare import dataset_targets, subset_by_counts
from balfeat.engine.config import Config
from balfeat.engine.validation import build_val_dataset
from balfeat.errors import ConfigError
from balfeat.evaluation.knn import KNN_MONITOR_IMAGES, KNNMonitor, knn_monitor
from balfeat.seeding import derive_seed

#: the stream of the held-out subsets: derive_seed(run.seed, KNN_SEED_TAG)
KNN_SEED_TAG = 4


def held_out_images(cfg: Config) -> Dataset[Any]:
    """The labelled images the run does not train on, with the evaluation transform, read from
    the dataset catalogue (:mod:`balfeat.data.catalog`).

    Fashion-MNIST and CIFAR-LT: their test sets; ``synthetic``: a second draw with its own seed;
    ``array``: the ``.npz`` file's ``test_images``/``test_labels``; image folders: the run's
    validation images (:func:`balfeat.engine.validation.build_val_dataset`: ``data.val_split``
    / ``data.val_root``), else ``data.test_split`` under ``data.root``, numbered and restricted
    to ``data.class_set`` as the training set is.

    Raises:
        ConfigError: the dataset has no held-out images configured.
    """
    from balfeat.data.datasets import ArrayDataset
    from balfeat.data.transforms import build_transform

    d = cfg.data
    if catalog.dataset_info(d.dataset).layout == "folder":
        pool = build_val_dataset(cfg)
        if pool is None and d.test_split:
            test = dataclasses.replace(d, val_split=d.test_split, val_root="")
            pool = build_val_dataset(dataclasses.replace(cfg, data=test))
        if pool is None:
            raise ConfigError(
                f"run.knn_every needs held-out images: for data.dataset={d.dataset} set "
                "data.val_split (or data.val_root, or data.test_split); or set run.knn_every=0"
            )
        return pool
    transform = build_transform("eval", d.image_size, d.channels)
    if d.dataset == "synthetic":
        seed = derive_seed(cfg.run.seed, KNN_SEED_TAG) % 2**32
        size = max(d.synthetic_size, 4 * d.num_classes)
        c = d.num_classes
        drawn = catalog.synthetic_data(
            c, d.image_size, channels=d.channels, train_size=size, test_size=0, seed=seed
        )
        return ArrayDataset(drawn.train_x, drawn.train_y, transform=transform, num_classes=c)
    if d.dataset == "array":  # one pair: load_arrays returns it as its training arrays
        arrays = catalog.load_arrays(
            d.dataset, d.root, option="run.knn_every with data.dataset=array",
            root_key="data.root", npz_pairs=(("test_images", "test_labels"),),
        )  # fmt: skip
        return ArrayDataset(arrays.train_x, arrays.train_y, transform=transform)
    data = catalog.load_arrays(
        d.dataset, d.root, imbalance_ratio=d.imbalance_ratio, option=f"data.dataset={d.dataset}",
        root_key="data.root",
    )  # fmt: skip
    return ArrayDataset(data.test_x, data.test_y, transform=transform)


def balanced_halves(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets, each with ``per_class`` random images of every class present
    (fewer where a class has fewer than ``2 * per_class``: half of them each, at least one).

    Returns:
        (memory indices, query indices), each sorted.
    """
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    present = np.bincount(labels, minlength=num_classes)
    counts = [min(per_class, max(1, int(n) // 2)) if n >= 2 else 0 for n in present]
    first = subset_by_counts(labels, counts, seed)
    rest = np.setdiff1d(np.arange(len(labels)), first)
    second = rest[subset_by_counts(labels[rest], counts, seed + 1)]
    return first, np.sort(second)


def build_knn_monitor(cfg: Config, num_classes: int) -> KNNMonitor | None:
    """The kNN monitor ``run.knn_every`` asks for (None when it is 0), on two balanced subsets
    of :func:`held_out_images`.

    Raises:
        ConfigError: no held-out images, or none with a class of the training set.
    """
    every = cfg.run.knn_every
    if every <= 0:
        return None
    pool = held_out_images(cfg)
    labels = np.asarray(dataset_targets(pool), dtype=np.int64)
    keep = np.flatnonzero(labels < num_classes)  # a class the training set lacks gets no vote
    if keep.size == 0 or np.bincount(labels[keep]).max() < 2:
        raise ConfigError(
            "run.knn_every: the held-out images hold no class of the training set with two "
            "images or more; check data.val_split / data.test_split or set run.knn_every=0"
        )
    per_class = max(1, KNN_MONITOR_IMAGES // num_classes)
    seed = derive_seed(cfg.run.seed, KNN_SEED_TAG) % 2**32
    mem, qry = balanced_halves(labels[keep], per_class, seed)
    return knn_monitor(
        Subset(pool, keep[mem].tolist()),
        Subset(pool, keep[qry].tolist()),
        num_classes,
        every=every,
        seed=seed,
    )


def run_monitors(cfg: Config, train_dataset: Dataset[Any]) -> list[KNNMonitor]:
    """The epoch callbacks the trainer adds for ``run.*``: the kNN monitor of
    ``run.knn_every`` over the training set's classes (none when it is 0)."""
    if cfg.run.knn_every <= 0:
        return []
    num_classes = getattr(train_dataset, "num_classes", None)
    if not isinstance(num_classes, int):
        num_classes = int(dataset_targets(train_dataset).max()) + 1
    monitor = build_knn_monitor(cfg, num_classes)
    return [] if monitor is None else [monitor]
