"""The dataset catalogue: every dataset balfeat reads, by name, and the checks of its labels.

``balfeat pretrain`` (``engine.build.build_train_dataset``), ``balfeat probe``
(``classify.runner.load_datasets``) and a study (``study.cells.load_study_data``) choose their
data here. Each :class:`DatasetInfo` names a dataset, how it is loaded (in-memory arrays or an
image folder with split files), its channels, native image size and class names; which of the
names a command accepts is its config's ``Literal`` type. The checks every labelled image set
gets (labels ``0..C-1`` with images in every class, class-set files naming known classes, a
validation split numbering the class folders as the training split does) are written here once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from balfeat.data.cifar_lt import load_cifar_lt
from balfeat.data.prepare import synthetic_arrays
from balfeat.data.sources import (
    FASHION_MNIST_CLASSES,
    ImageData,
    load_fashion_mnist,
    load_npz_arrays,
    load_torchvision_layout,
)
from balfeat.data.splits import class_names_of, read_class_set_lines
from balfeat.errors import BalfeatError, ConfigError, DataError, SplitFormatError


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of the catalogue.

    Attributes:
        name: the ``dataset`` value that selects it.
        layout: ``"arrays"`` (loaded whole into memory by :func:`load_arrays`) or ``"folder"``
            (image files under a root, listed by split files or a folder scan).
        channels: image channels; ``None`` when the data says (``array``) or the config does
            (``synthetic``).
        image_size: native side length in pixels; ``None`` when the data or config says.
        class_names: the class names, when fixed by the dataset; ``None`` when read from its
            files (CIFAR's ``batches.meta``, class folders) or numbered.
        small_images: whether a backbone for it uses the small-image stem by default.
        root: what ``root`` must be, for the error when it is missing (empty: optional).
        num_classes: classes, when fixed by the dataset.
        long_tailed_from: the balanced dataset a CIFAR-LT set is drawn from with
            :func:`balfeat.data.imbalance.exponential_counts` (the LDAM-DRW protocol), else empty.
    """

    name: str
    layout: str
    channels: int | None
    image_size: int | None
    class_names: tuple[str, ...] | None = None
    small_images: bool = True
    root: str = ""
    num_classes: int | None = None
    long_tailed_from: str = ""


_CIFAR_ROOT = (
    "the folder torchvision downloaded CIFAR into: it holds cifar-10-batches-py/ or "
    "cifar-100-python/"
)
_FOLDER_ROOT = "the folder the split paths are relative to, e.g. ImageNet train/"

CATALOG: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("fashion-mnist", "arrays", 1, 28, tuple(FASHION_MNIST_CLASSES), num_classes=10),
        DatasetInfo("cifar10", "arrays", 3, 32, root=_CIFAR_ROOT, num_classes=10),
        DatasetInfo("cifar100", "arrays", 3, 32, root=_CIFAR_ROOT, num_classes=100),
        DatasetInfo("cifar10-lt", "arrays", 3, 32, num_classes=10, long_tailed_from="cifar10"),
        DatasetInfo("cifar100-lt", "arrays", 3, 32, num_classes=100, long_tailed_from="cifar100"),
        DatasetInfo("synthetic", "arrays", None, None),
        DatasetInfo("array", "arrays", None, None, root="FILE.npz"),
        DatasetInfo("imagenet", "folder", 3, 224, small_images=False, root=_FOLDER_ROOT),
        DatasetInfo("inat", "folder", 3, 224, small_images=False, root=_FOLDER_ROOT),
        # a study's sets as split files of any image folder (read as pretrain's `imagenet`)
        DatasetInfo("image-folder", "folder", 3, None, root=_FOLDER_ROOT),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry of ``name``.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(CATALOG)}") from None


def require_root(
    name: str, root: str | os.PathLike[str] | None, *, option: str, key: str, what: str = ""
) -> str:
    """``root`` as a string, refusing an empty one for a dataset that needs it.

    Args:
        name: the dataset.
        root: its root as given.
        option: how the user chose the dataset (``--dataset cifar10``), for the error.
        key: the option that sets the root (``--data-root``, ``data.root``).
        what: what the root must hold (default: the catalogue's words).

    Raises:
        ConfigError: naming ``option``, ``key`` and what the root must hold.
    """
    info = dataset_info(name)
    if info.root and not root:
        raise ConfigError(f"{option} needs {key} ({what or info.root})")
    return str(root or "")


def load_arrays(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    imbalance_ratio: float = 1.0,
    option: str = "",
    root_key: str = "root",
    npz_pairs: tuple[tuple[str, str], ...] = (("train_x", "train_y"), ("test_x", "test_y")),
) -> ImageData:
    """The train and test arrays of an in-memory dataset of the catalogue (not ``synthetic``:
    see :func:`synthetic_data`).

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100``, ``cifar10-lt``, ``cifar100-lt`` or
            ``array``.
        root: where the files are (optional for Fashion-MNIST, which is found or fetched).
        imbalance_ratio: of the CIFAR-LT sets (the LDAM-DRW protocol).
        option: how the user chose the dataset, for the errors (default ``dataset NAME``).
        root_key: the option that sets ``root``, for the errors.
        npz_pairs: the image/label keys of an ``array`` file; with one pair the test arrays are
            empty.

    Raises:
        ConfigError: an unknown or folder dataset, a root missing.
        DataError: files that cannot be read (named by the loaders).
    """
    info = dataset_info(name)
    option = option or f"dataset {name}"
    if info.layout != "arrays" or name == "synthetic":
        raise ConfigError(f"dataset {name} is not read as arrays by load_arrays")
    if name == "fashion-mnist":
        return load_fashion_mnist(root or None)
    if name in ("cifar10", "cifar100"):
        return load_torchvision_layout(name, require_root(name, root, option=option, key=root_key))
    if info.long_tailed_from:
        return load_cifar_lt(info.long_tailed_from, root or ".", imbalance_ratio)
    path = require_root(name, root, option=option, key=root_key)
    a = load_npz_arrays(path, npz_pairs)
    (xk, yk), rest = npz_pairs[0], npz_pairs[1:]
    tx, ty = a[xk], np.asarray(a[yk], dtype=np.int64)
    if rest:
        vx, vy = a[rest[0][0]], np.asarray(a[rest[0][1]], dtype=np.int64)
        if not len(ty) or not len(vy):
            raise DataError(f"{path}: {yk} and {rest[0][1]} must not be empty")
    else:
        vx, vy = tx[:0], ty[:0]
    c = int(max(ty.max(initial=-1), vy.max(initial=-1))) + 1
    return ImageData(tx, ty, vx, vy, [str(i) for i in range(c)])


def synthetic_data(
    num_classes: int,
    image_size: int,
    *,
    channels: int,
    train_size: int,
    test_size: int,
    seed: int,
) -> ImageData:
    """The ``synthetic`` dataset: ``train_size`` images drawn with ``seed`` and ``test_size``
    drawn with ``seed + 1`` (none when 0), of :func:`~balfeat.data.prepare.synthetic_arrays`."""
    tx, ty = synthetic_arrays(train_size, num_classes, image_size, channels, seed)
    if test_size > 0:
        vx, vy = synthetic_arrays(test_size, num_classes, image_size, channels, seed + 1)
    else:
        vx, vy = tx[:0], ty[:0]
    return ImageData(tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)])


# ----------------------------------------------------------------------------- label checks


def check_label_gaps(
    targets: np.ndarray, source: str, lines: Sequence[int] | None = None
) -> np.ndarray:
    """Refuse labels that are not ``0..C-1`` with images in every class, and return the counts.

    Args:
        targets: labels (N,).
        source: the split file or folder they come from.
        lines: the line of each label in ``source``, to name the line of the largest label.

    Returns:
        Images per class (C,) int64, ``C = max label + 1``.

    Raises:
        DataError: naming the largest label (and its line) and the classes without images.
    """
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=1)
    gaps = np.flatnonzero(counts == 0)
    if len(gaps):
        top = int(counts.size - 1)
        where = source
        if lines is not None:
            where = f"{source}:{lines[int(np.flatnonzero(np.asarray(targets) == top)[0])]}"
        raise DataError(
            f"{where}: label {top} makes {top + 1} classes, but class(es) "
            f"{', '.join(str(int(c)) for c in gaps[:10])}{' ...' if len(gaps) > 10 else ''} "
            "have no images; labels must be 0..C-1 with images in every class - renumber the "
            "labels or fix the wrong one"
        )
    return counts


def check_num_classes(given: int, found: int, where: str, *, unset: int | None = None) -> None:
    """Refuse a ``data.num_classes`` that differs from the classes a dataset has.

    ``data.num_classes`` sets the classes of the ``synthetic`` dataset; every other dataset
    knows its own (Fashion-MNIST and CIFAR-10 10, CIFAR-100 100, an image folder or ``.npz``
    file the classes found), so a different value would be silently ignored.

    Args:
        given: ``data.num_classes``.
        found: the classes of the data.
        where: the dataset, split file or folder, for the error.
        unset: the config's default where it stands for "not given" (accepted whatever the
            data; ``None``: ``given`` was given).

    Raises:
        ConfigError: naming both numbers and ``where``.
    """
    if given not in (unset, found):
        raise ConfigError(
            f"data.num_classes={given}, but {where} has {found} classes; data.num_classes sets "
            f"the classes of the synthetic dataset only: remove it or set it to {found}"
        )


def check_class_set(path: str, known: Sequence[str], split: str) -> list[str]:
    """The class names of a class-set file, refusing names the training split does not have.

    Args:
        path: the class-set file (one ``/n01440764`` per line).
        known: the class (folder) names of the training split.
        split: the training split, named in the error.

    Raises:
        DataError: listing the unknown names with their lines.
    """
    numbered = read_class_set_lines(path)
    have = set(known)
    unknown = [f"{n!r} ({path}:{i})" for i, n in numbered if n not in have]
    if unknown:
        raise DataError(
            f"data.class_set: {len(unknown)} class(es) not in data.train_split "
            f"{split!r} ({len(have)} classes): {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}; fix the class-set file or use the split "
            "it was made for"
        )
    return [n for _, n in numbered]


def read_class_set_labels(path: str, class_names: list[str]) -> list[int]:
    """Labels of a class-set file: each line a label, a class name, or ``/wnid``.

    Raises:
        SplitFormatError: a label out of range or an unknown name, with ``file:line``.
    """
    labels: list[int] = []
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    # read_class_set_lines skips a BOM, blank lines and # comments, as every split reader does
    for lineno, item in read_class_set_lines(path):
        key = item.lstrip("/")
        if key.isascii() and key.isdigit():  # '²' is a digit to isdigit, not to int
            if int(key) >= len(class_names):
                raise SplitFormatError(
                    f"{path}:{lineno}: label {key} is not a class of the probe's training data "
                    f"(labels 0..{len(class_names) - 1})"
                )
            labels.append(int(key))
        elif key.lower() in lookup:
            labels.append(lookup[key.lower()])
        else:
            raise SplitFormatError(
                f"{path}:{lineno}: unknown class {item!r}; use a label 0..{len(class_names) - 1} "
                f"or one of {class_names[:5]}..."
            )
    return labels


def check_same_classes(train: Any, val: Any) -> None:
    """Refuse a validation split that numbers the class folders differently from the training
    split (a val folder scan missing one class, a split made with another class order): every
    image would be scored against the wrong class.

    Checked when the validation paths name their class folder the way the training paths do
    (``val/n01440764/x.JPEG``); a flat validation folder has no class folders to compare.

    Args:
        train, val: :class:`~balfeat.data.datasets.SplitImageDataset` objects.

    Raises:
        DataError: naming the validation line, its folder and the training split's folder.
    """
    train_names = class_names_of(train.entries, train.source)
    try:
        val_names = class_names_of(val.entries, val.source)
    except BalfeatError:  # one folder for several labels: a flat layout, nothing to compare
        return
    if not set(val_names.values()) <= set(train_names.values()):
        return  # other folder names (another naming): nothing to compare
    for i, e in enumerate(val.entries):  # the first line that disagrees, in file order
        label, name = e.label, e.class_name
        if train_names.get(label) != name:
            train_label = next(k for k, n in train_names.items() if n == name)
            raise DataError(
                f"{val._where(val.lines[i])}: label {label} is class folder {name!r}, but the "
                f"training data {train.source} labels {name!r} as {train_label} "
                f"(label {label} is {train_names.get(label, '?')!r} there); the two splits number "
                "the classes differently - make the validation split with the training split's "
                "labels"
            )
