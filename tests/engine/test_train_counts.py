"""The ``train_counts`` entry of a checkpoint: built from the config and dataset, read back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from balfeat.data.datasets import ArrayDataset
from balfeat.engine.config import load_config
from balfeat.engine.train_counts import checkpoint_counts, describe_training_set, training_counts


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        (["data.dataset=imagenet", "data.train_split=LT.txt", "data.root=/i"], "split LT.txt"),
        (["data.dataset=imagenet", "data.root=/i"], "/i (folder scan)"),
        (
            ["data.dataset=imagenet", "data.root=/i", "data.class_set=A.txt"],
            "/i (folder scan), class_set A.txt",
        ),
        (
            ["data.dataset=cifar100-lt", "data.imbalance_ratio=50", "data.channels=3"],
            "cifar100-lt ratio 50 (LDAM-DRW profile)",
        ),
        (["data.dataset=fashion-mnist"], "fashion-mnist"),
        (
            ["data.dataset=fashion-mnist", "data.imbalance_ratio=100", "run.seed=3"],
            "fashion-mnist, exponential profile ratio 100, seed 3",
        ),
        (["data.dataset=synthetic", "data.max_samples=9"], "synthetic, max_samples 9"),
    ],
)
def test_the_source_names_split_scan_or_profile(overrides: list[str], source: str) -> None:
    cfg = load_config(None, overrides)
    # path keys are stored absolute (resolved against the working directory at load)
    for rel in ("LT.txt", "A.txt"):
        source = source.replace(f" {rel}", f" {os.path.abspath(rel)}")
    assert describe_training_set(cfg) == source


def test_counts_in_class_order_with_empty_classes_and_a_given_dataset() -> None:
    cfg = load_config(None, ["data.dataset=synthetic"])
    ds = ArrayDataset(np.zeros((5, 4, 4), np.uint8), np.array([2, 0, 2, 2, 0]), num_classes=4)
    entry = training_counts(cfg, ds)
    assert entry == {
        "counts": [2, 0, 3, 0],
        "source": "synthetic",
        "images": 5,
        "class_names": ["0", "1", "2", "3"],
    }
    assert training_counts(cfg, ds, given=True)["source"] == (
        "a dataset given to the trainer (synthetic, 5 images)"
    )
    ds.counts_source = "set 'exp10' of the study"  # type: ignore[attr-defined]
    assert training_counts(cfg, ds, given=True)["source"] == "set 'exp10' of the study"


def test_reading_back_checks_presence_and_length() -> None:
    entry = {"counts": [9, 3, 1], "source": "split LT.txt", "images": 13}
    counts, said = checkpoint_counts({"train_counts": entry}, 3)
    assert counts is not None and counts.tolist() == [9, 3, 1]
    assert said == "the checkpoint's training counts (split LT.txt)"
    counts, said = checkpoint_counts({"train_counts": entry}, 5)
    assert counts is None and "cover 3 classes, the probe has 5" in said
    counts, said = checkpoint_counts({"model": {}}, 3)
    assert counts is None and "holds no training counts" in said


def test_named_classes_are_matched_to_the_probe_by_name() -> None:
    cfg = load_config(None, ["data.dataset=synthetic"])
    ds = ArrayDataset(
        np.zeros((6, 4, 4), np.uint8), np.array([0, 0, 0, 1, 1, 2]), class_names=["b", "c", "a"]
    )
    entry = training_counts(cfg, ds)
    assert entry["class_names"] == ["b", "c", "a"] and entry["counts"] == [3, 2, 1]
    info = {"train_counts": entry}
    counts, said = checkpoint_counts(info, 3, ["a", "b", "c"])  # the probe's folder order
    assert counts is not None and counts.tolist() == [1, 3, 2]
    assert said.endswith("matched to the probe's classes by name)")
    counts, said = checkpoint_counts(info, 3, ["b", "c", "a"])  # the same order: as stored
    assert counts is not None and counts.tolist() == [3, 2, 1] and "by name" not in said
    counts, _ = checkpoint_counts(info, 3, ["x", "y", "z"])  # other names: class-index order
    assert counts is not None and counts.tolist() == [3, 2, 1]
