"""The dataset catalogue: one table of datasets for pretrain, probe and study, and the label
checks written once."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest

from balfeat.classify.job import ProbeOptions
from balfeat.data import catalog
from balfeat.data.prepare import synthetic_arrays
from balfeat.data.splits import SplitEntry, write_split
from balfeat.engine.config import DataConfig
from balfeat.errors import ConfigError, DataError, SplitFormatError
from balfeat.study.spec import StudySpec


def _names(cls: type, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(cls)[field]))


def test_every_dataset_a_command_accepts_is_in_the_catalogue() -> None:
    pretrain = _names(DataConfig, "dataset")
    probe = _names(ProbeOptions, "dataset")
    study = _names(StudySpec, "dataset")
    assert pretrain and probe and study
    assert pretrain | probe | study <= set(catalog.CATALOG)
    for name in pretrain | probe | study:
        info = catalog.dataset_info(name)
        assert info.name == name and info.layout in ("arrays", "folder")


def test_catalogue_entries_say_channels_size_and_classes() -> None:
    fm = catalog.dataset_info("fashion-mnist")
    assert (fm.channels, fm.image_size, fm.num_classes) == (1, 28, 10)
    assert fm.class_names is not None and fm.class_names[0] == "T-shirt/top"
    assert catalog.dataset_info("cifar100").channels == 3
    assert catalog.dataset_info("cifar100-lt").num_classes == 100
    inet = catalog.dataset_info("imagenet")
    assert inet.layout == "folder" and not inet.small_images and inet.image_size == 224


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'.*fashion-mnist"):
        catalog.dataset_info("mnist")


def test_a_missing_root_names_the_option_and_what_it_holds() -> None:
    with pytest.raises(ConfigError, match=r"--dataset cifar10 needs --data-root \(the folder"):
        catalog.load_arrays("cifar10", "", option="--dataset cifar10", root_key="--data-root")
    with pytest.raises(ConfigError, match=r"data.dataset=array needs data.root \(FILE.npz\)"):
        catalog.load_arrays("array", None, option="data.dataset=array", root_key="data.root")
    with pytest.raises(ConfigError, match="not read as arrays"):
        catalog.load_arrays("imagenet", "/x")


def test_array_file_with_train_and_test_or_one_pair(tmp_path: Path) -> None:
    x = np.zeros((6, 4, 4), np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    f = tmp_path / "a.npz"
    np.savez(f, train_x=x, train_y=y, test_x=x[:3], test_y=y[:3], images=x, labels=y)
    d = catalog.load_arrays("array", f)
    assert d.train_x.shape == (6, 4, 4) and d.test_y.tolist() == [0, 1, 2]
    assert d.class_names == ["0", "1", "2"] and d.num_classes == 3
    assert d.train_y.dtype == np.int64
    one = catalog.load_arrays("array", f, npz_pairs=(("images", "labels"),))
    assert one.train_x.shape == (6, 4, 4) and len(one.test_y) == 0 and one.num_classes == 3


def test_synthetic_data_is_the_seeded_arrays() -> None:
    d = catalog.synthetic_data(3, 8, channels=1, train_size=12, test_size=5, seed=4)
    tx, ty = synthetic_arrays(12, 3, 8, 1, 4)
    vx, vy = synthetic_arrays(5, 3, 8, 1, 5)
    assert np.array_equal(d.train_x, tx) and np.array_equal(d.train_y, ty)
    assert np.array_equal(d.test_x, vx) and np.array_equal(d.test_y, vy)
    assert d.class_names == ["class0", "class1", "class2"]
    none = catalog.synthetic_data(3, 8, channels=3, train_size=6, test_size=0, seed=0)
    assert len(none.test_y) == 0 and none.train_x.shape == (6, 8, 8, 3)


def test_label_gaps_are_refused_with_the_line_of_the_largest_label() -> None:
    counts = catalog.check_label_gaps(np.array([0, 1, 1, 2]), "train.txt")
    assert counts.tolist() == [1, 2, 1]
    with pytest.raises(DataError, match=r"train.txt:7: label 4 makes 5 classes.*2, 3 have no"):
        catalog.check_label_gaps(np.array([0, 1, 4]), "train.txt", lines=[3, 5, 7])
    with pytest.raises(DataError, match=r"^train.txt: label 2 makes 3 classes"):
        catalog.check_label_gaps(np.array([0, 2]), "train.txt")


def test_class_set_names_must_be_known(tmp_path: Path) -> None:
    cs = tmp_path / "set.txt"
    cs.write_text("/n01\n/n03\n")
    assert catalog.check_class_set(str(cs), ["n01", "n02", "n03"], "train.txt") == ["n01", "n03"]
    with pytest.raises(DataError, match=r"1 class\(es\) not in data.train_split 'train.txt'"):
        catalog.check_class_set(str(cs), ["n01", "n02"], "train.txt")


def test_class_set_labels_by_number_name_or_wnid(tmp_path: Path) -> None:
    cs = tmp_path / "set.txt"
    cs.write_text("2\n/n01\nN02\n")
    assert catalog.read_class_set_labels(str(cs), ["n01", "n02", "n03"]) == [2, 0, 1]
    cs.write_text("7\n")
    with pytest.raises(SplitFormatError, match=r"set.txt:1: label 7"):
        catalog.read_class_set_labels(str(cs), ["n01", "n02", "n03"])
    cs.write_text("\u00b2\n")  # a digit to str.isdigit, not to int(): was a raw ValueError
    with pytest.raises(SplitFormatError, match=r"set.txt:1: unknown class"):
        catalog.read_class_set_labels(str(cs), ["n01", "n02", "n03"])


def test_validation_split_numbering_classes_otherwise_is_refused(tmp_path: Path) -> None:
    from balfeat.data.datasets import SplitImageDataset

    train = [SplitEntry("/a/1.png", 0), SplitEntry("/b/2.png", 1)]
    val = [SplitEntry("val/b/3.png", 0), SplitEntry("val/a/4.png", 1)]
    write_split(tmp_path / "train.txt", train)
    write_split(tmp_path / "val.txt", val)
    tr = SplitImageDataset(tmp_path, str(tmp_path / "train.txt"), check_files=False)
    va = SplitImageDataset(tmp_path, str(tmp_path / "val.txt"), check_files=False)
    with pytest.raises(DataError, match=r"label 0 is class folder 'b'.*number the classes"):
        catalog.check_same_classes(tr, va)
    write_split(tmp_path / "val.txt", [SplitEntry("val/a/4.png", 0), SplitEntry("val/b/3.png", 1)])
    ok = SplitImageDataset(tmp_path, str(tmp_path / "val.txt"), check_files=False)
    catalog.check_same_classes(tr, ok)


def test_the_long_tailed_sets_name_their_balanced_source() -> None:
    assert catalog.dataset_info("cifar10-lt").long_tailed_from == "cifar10"
    assert catalog.dataset_info("cifar100-lt").long_tailed_from == "cifar100"
    assert not catalog.dataset_info("cifar10").long_tailed_from
