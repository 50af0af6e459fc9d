"""The class counts a run trained on, as its checkpoints carry them.

The paper groups classes into many/medium/few by their PRE-TRAINING frequency. A checkpoint
therefore stores ``train_counts``: the images per class of the pre-training set, in class-index
order, and where they came from (a split file, a folder scan, a generated profile)::

    {"counts": [1280, 640, ..., 5], "source": "split ImageNet_LT_train.txt", "images": 115846,
     "class_names": ["n01440764", ...]}

(``class_names`` when the dataset names its classes: a probe whose classes carry the same names
in another order is matched by name.)

:func:`training_counts` builds that entry from the config and the dataset the trainer built;
:func:`checkpoint_counts` reads it back (``balfeat probe`` groups by it unless
``--group-counts`` says otherwise). Checkpoints written before the entry existed have none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from balfeat.engine.config import Config
from balfeat.errors import BalfeatError

#: The checkpoint key (also copied into the loading info of ``models.loading``).
KEY = "train_counts"


def describe_training_set(cfg: Config) -> str:
    """Where the training set of ``cfg`` comes from, in words (split file, scan or profile)."""
    d = cfg.data
    if d.dataset in ("cifar10-lt", "cifar100-lt"):
        return f"{d.dataset} ratio {d.imbalance_ratio:g} (LDAM-DRW profile)"
    if d.dataset in ("synthetic", "fashion-mnist", "array"):
        parts = [d.dataset if d.dataset != "array" else f"array {d.root}"]
        if d.imbalance_ratio > 1.0 or d.per_class > 0:
            per = f", {d.per_class} per class" if d.per_class > 0 else ""
            parts.append(
                f"exponential profile ratio {d.imbalance_ratio:g}{per}, seed {cfg.run.seed}"
            )
    else:
        parts = [f"split {d.train_split}" if d.train_split else f"{d.root} (folder scan)"]
        if d.class_set:
            parts.append(f"class_set {d.class_set}")
    if d.max_samples > 0:
        parts.append(f"max_samples {d.max_samples}")
    return ", ".join(parts)


def training_counts(cfg: Config, dataset: Any, *, given: bool = False) -> dict[str, Any]:
    """The ``train_counts`` entry of a checkpoint: ``dataset``'s images per class and their source.

    Args:
        cfg: the run's config (describes the set when the trainer built it).
        dataset: the training dataset (``.targets``; ``.num_classes`` when it has one).
        given: the dataset was handed to the trainer (a study's set): its own ``counts_source``
            attribute names it when present, else the config's description is marked as such.

    Returns:
        ``{"counts": [int, ...], "source": str, "images": int}``.
    """
    targets = np.asarray(dataset.targets, dtype=np.int64)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0) or int(targets.max(initial=-1)) + 1
    counts = np.bincount(targets, minlength=num_classes)
    if not given:
        source = describe_training_set(cfg)
    else:  # the config does not describe a handed-in set; the set may name itself
        named = getattr(dataset, "counts_source", "")
        default = f"a dataset given to the trainer ({cfg.data.dataset}, {len(targets)} images)"
        source = str(named or default)
    entry: dict[str, Any] = {
        "counts": [int(c) for c in counts],
        "source": source,
        "images": len(targets),
    }
    try:
        names = getattr(dataset, "class_names", None)
    except BalfeatError:  # a flat folder (one folder, several labels) names no classes
        names = None
    if names is not None and len(names) == num_classes:
        entry["class_names"] = [str(n) for n in names]
    return entry


def checkpoint_counts(
    info: Mapping[str, Any], num_classes: int, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray | None, str]:
    """The training counts a checkpoint (or its loading info) carries, checked against the
    probe's classes.

    Args:
        info: a checkpoint dict or the info of ``models.loading.load_backbone_state``.
        num_classes: classes of the probe; counts of another length are not used.
        class_names: the probe's class names; when the checkpoint names the same classes in
            another order, the counts are put in the probe's order (else: class-index order).

    Returns:
        ``(counts, source)`` when usable, else ``(None, why not)``.
    """
    entry = info.get(KEY)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("counts"), (list, tuple)):
        return None, "the checkpoint holds no training counts (older than them, or not balfeat's)"
    counts = np.asarray(entry["counts"], dtype=np.int64)
    if counts.ndim != 1 or len(counts) != num_classes:
        return None, (
            f"the checkpoint's training counts cover {len(counts)} classes, the probe has "
            f"{num_classes} (another class set)"
        )
    source = str(entry.get("source", "source unknown"))
    names = [str(n) for n in entry.get("class_names") or []]
    probe = [str(n) for n in class_names or []]
    if len(names) == len(counts) == len(set(names)) and names != probe and set(names) == set(probe):
        at = {n: i for i, n in enumerate(names)}
        counts = counts[[at[n] for n in probe]]
        source += ", matched to the probe's classes by name"
    return counts, f"the checkpoint's training counts ({source})"
