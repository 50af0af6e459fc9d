"""Where a probe makes its choices: the best epoch, τ and the LWS/cRT epochs (``select_on``).

``val``: on a selection split carved from the probe's training data (:func:`carve_selection`,
seeded, a fraction per class, at least one image), never trained on; or on a list the user names
(``select_split``). ``test``: on the evaluation list, as the reference's ``main_lincls.py`` does,
and labelled :data:`SELECTED_ON_TEST` wherever it is printed or written. ``last``: nothing is
chosen (the last epoch is kept, the τ sweep is reported without a pick).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from balfeat.data.prepare import dataset_targets

#: The three places a probe may choose on.
SelectOn = Literal["val", "test", "last"]

#: The label of every choice made on the evaluation list (the reference's practice).
SELECTED_ON_TEST = "selected on test (as the reference)"


def kept_epoch(select_on: str) -> Literal["best", "last"]:
    """Which epoch a probe keeps: the ``last`` one where nothing is chosen, else the best."""
    return "last" if select_on == "last" else "best"


def choice_label(select_on: str) -> str:
    """How a choice is labelled in printed lines: the test label only where it was made there."""
    return {
        "test": SELECTED_ON_TEST,
        "val": "selected on val",
        "last": "last epoch, nothing selected",
    }[select_on]


@dataclass
class Carved:
    """A training set split into the images the classifier trains on and the selection split.

    Attributes:
        train: indices into the training set the classifier trains on (sorted).
        select: indices of the selection split (sorted), disjoint from ``train``.
        per_class: selection images per class.
        seed: the seed of the draw.
        fraction: the fraction per class asked for.
    """

    train: np.ndarray
    select: np.ndarray
    per_class: list[int]
    seed: int
    fraction: float

    def record(self) -> dict[str, Any]:
        """JSON-ready description: seed, fraction, per-class counts and a hash of the indices."""
        digest = hashlib.sha256(np.asarray(self.select, dtype=np.int64).tobytes()).hexdigest()
        return {
            "seed": self.seed,
            "fraction": self.fraction,
            "per_class": self.per_class,
            "images": len(self.select),
            "trained_on": len(self.train),
            "indices_sha256": digest,
        }


def carve_selection(targets: Sequence[int] | np.ndarray, fraction: float, seed: int) -> Carved:
    """Draw ``fraction`` of each class's images (rounded, at least one; none from a class of
    one image, which must stay trainable) as a selection split, seeded by ``seed``."""
    labels = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    per_class: list[int] = []
    for c in range(int(labels.max(initial=-1)) + 1):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        per_class.append(int(k))
        chosen.append(rng.permutation(idx)[:k])
    select = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), select)
    return Carved(train, select, per_class, seed, fraction)


class IndexSubset(Dataset[Any]):
    """Some samples of a dataset by index, keeping its labels, ``.targets`` and class count."""

    def __init__(self, dataset: Dataset[Any], indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        every = dataset_targets(dataset)
        self.targets = every[self.indices]
        self.num_classes = int(getattr(dataset, "num_classes", None) or every.max(initial=0) + 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.indices[i])]


@dataclass
class Selection:
    """The datasets of a probe once ``select_on`` is applied.

    Attributes:
        train: what the classifier trains on (augmented where the protocol augments).
        plain: the same images un-augmented (decoupled classifiers' features).
        select: where the choices are made (the evaluation list itself for ``test``/``last``).
        separate: ``select`` is not the evaluation list (its choices must be re-evaluated).
        record: the ``selection`` block of results.json.
    """

    train: Any
    plain: Any
    select: Any
    separate: bool
    record: dict[str, Any]


def prepare_selection(args: Any, train: Any, plain: Any, test: Any) -> Selection:
    """Apply ``args.select_on`` / ``select_split`` / ``select_fraction`` to a probe's datasets.

    Raises:
        ConfigError: ``select_split`` names no file (one line, naming the key).
    """
    from pathlib import Path

    from balfeat.errors import ConfigError

    mode = args.select_on
    chosen = "best epoch (probe, cRT, LWS) and tau" if args.decoupled else "best epoch"
    if mode != "val":
        on = (
            f"val_split {args.val_split!r}, the list top-1 is measured on"
            if mode == "test"
            else "nothing: the last epoch is kept, the tau sweep is reported without a pick"
        )
        record = {"select_on": mode, "chosen": chosen if mode == "test" else "nothing", "on": on}
        if mode == "test":
            record["label"] = SELECTED_ON_TEST
        return Selection(train, plain, test, False, record)
    if args.select_split:
        if not Path(args.select_split).is_file():
            raise ConfigError(
                f"probe.select_split: no such file {args.select_split!r} (select_on val chooses "
                "on it); name an existing list, or leave select_split empty to carve one from "
                "the training data"
            )
        from balfeat.data.datasets import SplitImageDataset

        named = SplitImageDataset(
            args.data_root, args.select_split, getattr(plain, "transform", None),
            num_classes=getattr(plain, "num_classes", None), source=args.select_split,
        )  # fmt: skip
        trained = {e.path for e in getattr(plain, "entries", [])}
        shared = sum(e.path in trained for e in getattr(named, "entries", []))
        if shared:
            raise ConfigError(
                f"probe.select_split: {shared} of its images are in the training list; choices "
                "made on trained images are optimistic: name a list disjoint from train_split"
            )
        record = {"select_on": "val", "chosen": chosen, "on": f"select_split {args.select_split!r}"}
        return Selection(train, plain, named, True, record)
    carved = carve_selection(dataset_targets(plain), args.select_fraction, args.seed)
    record = {
        "select_on": "val",
        "chosen": chosen,
        "on": "a selection split carved from the training data, not trained on",
        "carved": carved.record(),
    }
    return Selection(
        IndexSubset(train, carved.train),
        IndexSubset(plain, carved.train),
        IndexSubset(plain, carved.select),
        True,
        record,
    )


def logits_on(
    backbone: Any, classifier: Any, dataset: Any, device: Any, num_workers: int = 0
) -> tuple[Any, Any]:
    """(logits, labels) of a frozen backbone + classifier on a dataset (eval mode, no grad)."""
    import torch

    from balfeat.classify.features import extract_features

    x, y = extract_features(backbone, dataset, 256, device, 0, 0, num_workers, False)
    fc = classifier.to(x.device).eval()
    with torch.no_grad():
        logits = fc(x.float())
    classifier.cpu()
    return logits.cpu(), y.cpu().long()


def evaluate_on_test(res: Any, backbone: Any, test: Any, device: Any, num_workers: int = 0) -> Any:
    """Re-point a probe result chosen on a selection split at the evaluation list: its logits
    become the test logits; the selection split's top-1 is kept as ``extras["select_top1"]``."""
    res.extras["select_top1"] = res.best_top1
    res.val_logits, res.val_labels = logits_on(backbone, res.classifier, test, device, num_workers)
    return res
