"""Datasets returning ``(image, label)``, each with ``.targets`` (int64, N) and ``.num_classes``.

``image`` is whatever the transform returns (a tensor, or a list of tensors for ``TwoViews``);
transforms take a PIL image (for :class:`SplitImageDataset` with ``decode="cpu"``, a uint8 tensor).
Samplers, metrics and shot groups read ``.targets`` without loading any image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from balfeat.data.splits import SplitEntry, class_names_of, read_split
from balfeat.errors import ConfigError, DataError

#: Takes a PIL image (or a uint8 tensor (C, H, W) for ``SplitImageDataset(decode="cpu")``).
Transform = Callable[[Any], Any]


def class_counts(targets: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Images per class. Shape: (N,) -> (num_classes,) int64 (classes without images count 0).

    Raises:
        DataError: targets that are not 1-D whole class ids ``>= 0``, or a class id
            ``>= num_classes`` (it would lengthen the result past ``num_classes``).
    """
    raw = np.asarray(targets)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu" and not _whole_floats(raw)):
        raise DataError(
            f"class_counts needs 1-D integer class ids, got shape {raw.shape} {raw.dtype}"
        )
    t = raw.astype(np.int64)
    if t.size and (int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes)):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(
            f"class_counts: targets must be class ids {bound}, got [{t.min()}, {t.max()}]"
        )
    return np.bincount(t, minlength=num_classes or 0).astype(np.int64)


def _whole_floats(arr: np.ndarray) -> bool:
    """Float values that are all whole numbers (``3.0``): read as class ids."""
    return arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))


def class_indices(
    targets: Sequence[int] | np.ndarray, num_classes: int | None = None
) -> list[np.ndarray]:
    """Positions of each class's samples, in dataset order; one int64 array per class."""
    t = np.asarray(targets, dtype=np.int64)
    c = num_classes if num_classes is not None else (int(t.max()) + 1 if len(t) else 0)
    order = np.argsort(t, kind="stable")
    bounds = np.searchsorted(t[order], np.arange(c + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(c)]


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array (MNIST, Fashion-MNIST, CIFAR).

    Args:
        images: uint8 array, shape (N, H, W) (grey) or (N, H, W, C) (C = 1 or 3).
        labels: integer labels, shape (N,).
        transform: takes a PIL image (mode ``L`` or ``RGB``). With ``None`` an item's image is a
            float tensor of shape (C, H, W) in [0, 1].
        class_names: one name per class; default ``"0"``, ``"1"``, ...
        num_classes: default ``max(labels) + 1`` (or ``len(class_names)``).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        transform: Transform | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(
                f"ArrayDataset wants uint8 images of shape (N,H,W) or (N,H,W,C), got "
                f"{images.dtype} {images.shape}"
            )
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        self.images = images
        self.targets = np.asarray(labels, dtype=np.int64)
        if len(self.targets) != len(images):
            raise DataError(f"{len(images)} images but {len(self.targets)} labels")
        if num_classes is None:
            num_classes = (
                len(class_names)
                if class_names is not None
                else (int(self.targets.max()) + 1 if len(self.targets) else 0)
            )
        self.num_classes = int(num_classes)
        if self.targets.ndim != 1 or (
            len(self.targets)
            and (int(self.targets.min()) < 0 or int(self.targets.max()) >= self.num_classes)
        ):
            raise DataError(
                f"ArrayDataset labels must be 1-D class ids in [0, {self.num_classes}), got "
                f"shape {self.targets.shape}"
                + (
                    f", values in [{self.targets.min()}, {self.targets.max()}]"
                    if self.targets.size
                    else ""
                )
            )
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.images[index]
        label = int(self.targets[index])
        if self.transform is None:
            t = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)
            return (t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)), label
        return self.transform(Image.fromarray(img)), label


#: How :class:`SplitImageDataset` names entries found by
#: :func:`balfeat.data.folder_scan.scan_image_folder`: ``FOLDER_SCAN.format(root)``.
FOLDER_SCAN = "{} (folder scan)"


#: What the error of a missing or unreadable image advises by default.
BAD_IMAGE_HINT = "skip bad images (data.skip_bad_images=true / skip_bad_images=True)"


class SplitImageDataset(Dataset):
    """Image files listed by a split file (ImageNet and iNaturalist layouts).

    Each entry's path is relative to ``root`` (a leading slash is relative too). How an image is
    read depends on ``decode`` (``data.decode``, see :mod:`balfeat.data.decode`):

    - ``"pil"``: opened with PIL and converted to RGB; the transform takes the PIL image;
    - ``"cpu"``: the file's bytes decoded by :func:`balfeat.data.decode.decode_image_bytes`
      (``torchvision.io.decode_jpeg`` for JPEGs) to a uint8 RGB tensor Shape: (3, H, W); the
      transform takes that tensor (e.g. :func:`balfeat.data.transforms.build_tensor_transform`);
    - ``"gpu"``: no decoding here: the item is the file's bytes, uint8 Shape: (num_bytes,), to be
      batched by :func:`balfeat.data.decode.collate_encoded` and decoded on the device; a file
      that is not a JPEG (nvJPEG reads only JPEG) is decoded here to uint8 Shape: (3, H, W).
      Files that are unreadable JPEGs are found only when the batch is decoded.

    Args:
        root: the folder the split paths are relative to (e.g. ImageNet ``train/`` for the train
            lists, the ImageNet root for the val/test lists).
        split: a split file or its entries.
        transform: takes a PIL RGB image (``decode="pil"``) or a uint8 tensor (``"cpu"``);
            ``None`` returns the image itself. Must be ``None`` for ``"gpu"``.
        num_classes: default ``max(label) + 1``.
        skip_bad_images: on a missing or unreadable image, skip it and record it in
            ``.bad_images`` instead of raising. Missing files are found when the dataset is built;
            unreadable ones when they are loaded (the item is then replaced by the next good one).
        check_files: check at construction that every listed file exists.
        decode: ``"pil"`` (default), ``"cpu"`` or ``"gpu"``, as above (already resolved by
            :func:`balfeat.data.decode.select_decode`: ``"gpu"`` here means bytes are yielded).
        source: where entries given as a list come from, named in error messages: a split
            file (with the entry's line number), or ``"FOLDER (folder scan)"`` (see
            :data:`FOLDER_SCAN`; no line number, the image path says it all).
        bad_image_hint: what the error of a missing or unreadable image advises (default: the
            option that skips them; a caller without that option passes its own advice).

    Raises:
        DataError: naming the image and its split line, for a missing or unreadable image, or a
            split file without entries.
        ConfigError: an unknown ``decode``, or a transform with ``decode="gpu"``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | os.PathLike[str] | Sequence[SplitEntry],
        transform: Transform | None = None,
        num_classes: int | None = None,
        skip_bad_images: bool = False,
        check_files: bool = True,
        decode: str = "pil",
        source: str = "<entries>",
        bad_image_hint: str = BAD_IMAGE_HINT,
    ) -> None:
        if decode not in ("pil", "cpu", "gpu"):
            raise ConfigError(f"SplitImageDataset decode={decode!r}: use 'pil', 'cpu' or 'gpu'")
        if decode == "gpu" and transform is not None:
            raise ConfigError(
                "SplitImageDataset decode='gpu' yields encoded files (augmented on the device by "
                "balfeat.data.decode.EncodedBatchAugment); pass transform=None"
            )
        self.decode = decode
        self.root = Path(root)
        if isinstance(split, (str, os.PathLike)):
            self.source = str(split)
            entries = read_split(split, num_classes=num_classes)
            if not entries:  # no image at all: say which file, not "0 images" later on
                raise DataError(
                    f"split file {self.source!r} holds no entries (it is empty or only blank "
                    "lines and # comments); give one 'path label' line per image"
                )
        else:
            self.source = source
            entries = list(split)
        self.lines = list(range(1, len(entries) + 1))
        self.skip_bad_images = skip_bad_images
        self.bad_image_hint = bad_image_hint
        self.bad_images: list[tuple[str, str]] = []
        self.entries = entries
        if check_files:
            self.check_files()
        entries = self.entries
        self.targets = np.fromiter((e.label for e in entries), np.int64, count=len(entries))
        self.num_classes = int(
            num_classes
            if num_classes is not None
            else (int(self.targets.max()) + 1 if len(entries) else 0)
        )
        self.transform = transform

    def check_files(self) -> None:
        """Check that every listed image exists (run by ``__init__`` unless ``check_files=False``).

        Missing images are dropped and recorded in ``.bad_images`` with ``skip_bad_images``;
        otherwise the first one raises DataError naming ``split file:line``.
        """
        kept: list[SplitEntry] = []
        lines: list[int] = []
        for line, e in zip(self.lines, self.entries, strict=True):
            if e.resolve(self.root).is_file():
                kept.append(e)
                lines.append(line)
            elif self.skip_bad_images:
                self.bad_images.append((str(e.resolve(self.root)), f"{self._where(line)}: missing"))
            else:
                raise DataError(
                    f"{self._where(line)}: image {e.resolve(self.root)} does not exist; "
                    f"check the data root / the split file, or {self.bad_image_hint}"
                )
        self.entries, self.lines = kept, lines
        self.targets = np.fromiter((e.label for e in kept), np.int64, count=len(kept))

    @property
    def class_names(self) -> list[str]:
        """The folder name of each class (``""`` for a class without images)."""
        names = class_names_of(self.entries, self.source)
        return [names.get(i, "") for i in range(self.num_classes)]

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Image.Image:
        """The RGB PIL image of item ``index``; raises DataError naming the file and line."""
        e = self.entries[index]
        path = e.resolve(self.root)
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as err:
            raise self._unreadable(index, path, err) from err

    def _where(self, line: int) -> str:
        """``split file:line`` of an entry; the folder alone for a folder scan."""
        if self.source.endswith(FOLDER_SCAN.format("")):
            return self.source
        return f"{self.source}:{line}"

    def _unreadable(self, index: int, path: Path, err: Exception) -> DataError:
        return DataError(
            f"{self._where(self.lines[index])}: cannot read image {path}: {err}; "
            f"replace the file, or {self.bad_image_hint}"
        )

    def load_tensor(self, index: int) -> torch.Tensor:
        """Item ``index`` decoded on the CPU (``decode="cpu"``). Shape: (3, H, W) uint8.

        Raises:
            DataError: naming the file and its split line.
        """
        from balfeat.data.decode import decode_image_bytes

        path = self.entries[index].resolve(self.root)
        try:
            return decode_image_bytes(path.read_bytes(), 3)
        except (OSError, ValueError) as err:
            raise self._unreadable(index, path, err) from err

    def load_encoded(self, index: int) -> torch.Tensor:
        """Item ``index`` for ``decode="gpu"``: a JPEG's bytes, uint8 Shape: (num_bytes,), or
        another format decoded on the CPU, uint8 Shape: (3, H, W).

        Raises:
            DataError: naming the file and its split line (unreadable file, or a non-JPEG that
                does not decode).
        """
        from balfeat.data.decode import decode_image_bytes, is_jpeg

        path = self.entries[index].resolve(self.root)
        try:
            data = path.read_bytes()
            if is_jpeg(data):
                return torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_image_bytes(data, 3)
        except (OSError, ValueError) as err:
            raise self._unreadable(index, path, err) from err

    def _item(self, index: int) -> Any:
        if self.decode == "gpu":
            return self.load_encoded(index)
        img = self.load(index) if self.decode == "pil" else self.load_tensor(index)
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            try:
                img = self._item(i)
            except DataError as err:
                if not self.skip_bad_images:
                    raise
                self.bad_images.append((str(self.entries[i].resolve(self.root)), str(err)))
                continue
            return img, int(self.targets[i])
        raise DataError(f"{self.source}: no readable image at all under {self.root}")


class ListDataset(SplitImageDataset):
    """The iNaturalist layout (``train_val2018/Plantae/7291/x.jpg 7291``): same as the parent."""


def subset_classes(
    data: Sequence[SplitEntry] | SplitImageDataset | ArrayDataset,
    classes: Sequence[int | str],
) -> Any:
    """Keep only ``classes`` (labels or class-folder names) and relabel them 0..C'-1 in that order.

    Args:
        data: split entries, a :class:`SplitImageDataset` or an :class:`ArrayDataset`.
        classes: integer labels, or class names (e.g. a class-set file read by
            :func:`balfeat.data.splits.read_class_set`).

    Returns:
        The same kind of object as ``data``, restricted and relabelled.

    Raises:
        DataError: listing classes that are unknown, or that have no images.
    """
    entries: list[SplitEntry] | None = None
    if isinstance(data, ArrayDataset):
        names_by_label = dict(enumerate(data.class_names))
        targets = data.targets
        num = data.num_classes
    else:
        entries = list(data.entries if isinstance(data, SplitImageDataset) else data)
        names_by_label = class_names_of(entries)
        targets = np.fromiter((e.label for e in entries), np.int64, count=len(entries))
        num = data.num_classes if isinstance(data, SplitImageDataset) else int(targets.max()) + 1
    label_of_name = {n: label for label, n in names_by_label.items()}
    wanted: list[int] = []
    unknown: list[str] = []
    for c in classes:
        if isinstance(c, str):
            key = c.lstrip("/")
            if key in label_of_name:
                wanted.append(label_of_name[key])
            else:
                unknown.append(repr(c))
        else:
            label = int(c)
            if 0 <= label < num:
                wanted.append(label)
            else:
                unknown.append(str(c))
    if unknown:
        raise DataError(
            f"subset_classes: unknown classes {', '.join(unknown[:10])}"
            f"{' ...' if len(unknown) > 10 else ''} ({len(unknown)} in all); the data has "
            f"{num} classes"
        )
    counts = class_counts(targets, num)
    empty = [str(c) for c in wanted if counts[c] == 0]
    if empty:
        raise DataError(f"subset_classes: classes without images: {', '.join(empty[:10])}")
    new_label = np.full(num, -1, dtype=np.int64)
    new_label[wanted] = np.arange(len(wanted))
    keep = np.flatnonzero(new_label[targets] >= 0)
    if isinstance(data, ArrayDataset):
        return ArrayDataset(
            data.images[keep],
            new_label[targets[keep]],
            data.transform,
            class_names=[data.class_names[c] for c in wanted],
        )
    assert entries is not None
    sub = [SplitEntry(entries[i].path, int(new_label[targets[i]])) for i in keep]
    if isinstance(data, SplitImageDataset):
        out = type(data).__new__(type(data))
        out.__dict__.update(data.__dict__)
        out.entries = sub
        out.lines = [data.lines[i] for i in keep]
        out.targets = np.fromiter((e.label for e in sub), np.int64, count=len(sub))
        out.num_classes = len(wanted)
        out.bad_images = []
        return out
    return sub
