from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.data.datasets import (
    ArrayDataset,
    ListDataset,
    SplitImageDataset,
    class_counts,
    class_indices,
    subset_classes,
)
from balfeat.data.splits import SplitEntry, write_split
from balfeat.errors import DataError


def test_array_dataset_grey_and_rgb() -> None:
    grey = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    ds = ArrayDataset(grey, [1, 0], class_names=["a", "b"])
    img, label = ds[0]
    assert isinstance(img, torch.Tensor) and img.shape == (1, 4, 5) and label == 1
    assert img.dtype == torch.float32 and float(img.max()) <= 1.0
    assert img[0, 0, 1] == pytest.approx(1 / 255)
    assert ds.targets.dtype == np.int64 and ds.num_classes == 2 and ds.class_names == ["a", "b"]
    rgb = np.zeros((3, 4, 5, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    img, _ = ArrayDataset(rgb, [0, 1, 2])[1]
    assert img.shape == (3, 4, 5) and img[2].min() == 1.0 and img[0].max() == 0.0
    ds = ArrayDataset(grey, [1, 0], transform=lambda im: (im.mode, im.size))
    assert ds[1] == (("L", (5, 4)), 0)


def test_array_dataset_rejects_floats() -> None:
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(np.zeros((2, 3, 3), dtype=np.float32), [0, 1])
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(np.zeros((2, 3, 3), dtype=np.uint8), [0])


def _image_tree(root: Path, classes: dict[str, int]) -> list[SplitEntry]:
    entries = []
    for label, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (3, 2), color=label * 40 + i).save(root / name / f"{name}_{i}.png")
            entries.append(SplitEntry(f"/{name}/{name}_{i}.png", label))
    return entries


def test_split_image_dataset(tmp_path: Path) -> None:
    entries = _image_tree(tmp_path / "train", {"n01": 2, "n02": 3})
    write_split(tmp_path / "s.txt", entries)
    ds = SplitImageDataset(tmp_path / "train", tmp_path / "s.txt", transform=lambda im: im.mode)
    assert len(ds) == 5 and ds.num_classes == 2
    assert ds.targets.tolist() == [0, 0, 1, 1, 1]
    assert ds[3] == ("RGB", 1)
    assert ds.class_names == ["n01", "n02"]
    raw = SplitImageDataset(tmp_path / "train", entries)
    assert raw[0][0].size == (3, 2)


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    entries = _image_tree(tmp_path, {"n01": 2})
    entries.append(SplitEntry("/n01/gone.png", 0))
    write_split(tmp_path / "s.txt", entries)
    with pytest.raises(DataError, match=r"s\.txt:3: image .*gone\.png does not exist"):
        SplitImageDataset(tmp_path, tmp_path / "s.txt")
    ds = SplitImageDataset(tmp_path, tmp_path / "s.txt", skip_bad_images=True)
    assert len(ds) == 2 and ds.bad_images[0][0].endswith("gone.png")
    (tmp_path / "n01" / "n01_0.png").write_bytes(b"not an image")
    strict = SplitImageDataset(tmp_path, entries[:2])
    with pytest.raises(DataError, match=r"<entries>:1: cannot read image .*n01_0\.png"):
        strict[0]
    lenient = SplitImageDataset(tmp_path, entries[:2], skip_bad_images=True)
    img, label = lenient[0]
    assert img.size == (3, 2) and label == 0
    assert lenient.bad_images and "n01_0.png" in lenient.bad_images[0][0]


def test_list_dataset_inaturalist_layout(tmp_path: Path) -> None:
    (tmp_path / "train_val2018/Plantae/7").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(tmp_path / "train_val2018/Plantae/7/a.jpg")
    ds = ListDataset(tmp_path, [SplitEntry("train_val2018/Plantae/7/a.jpg", 7)])
    assert ds.num_classes == 8 and ds[0][1] == 7 and ds.class_names[7] == "7"


def test_subset_classes_entries_and_datasets(tmp_path: Path) -> None:
    entries = _image_tree(tmp_path, {"n01": 1, "n02": 2, "n03": 3})
    sub = subset_classes(entries, ["/n03", "n01"])
    assert [(e.class_name, e.label) for e in sub] == [("n01", 1)] + [("n03", 0)] * 3
    ds = subset_classes(SplitImageDataset(tmp_path, entries), [1])
    assert len(ds) == 2 and ds.num_classes == 1 and ds.targets.tolist() == [0, 0]
    assert ds[1][0].size == (3, 2)
    arr = ArrayDataset(np.zeros((4, 2, 2), np.uint8), [0, 1, 2, 2], class_names=["a", "b", "c"])
    sub_arr = subset_classes(arr, ["c", "a"])
    assert sub_arr.targets.tolist() == [1, 0, 0] and sub_arr.class_names == ["c", "a"]
    with pytest.raises(DataError, match="unknown classes 'n09', 7"):
        subset_classes(entries, ["n09", 7])
    empty = ArrayDataset(np.zeros((2, 2, 2), np.uint8), [0, 0], num_classes=3)
    with pytest.raises(DataError, match="without images: 2"):
        subset_classes(empty, [0, 2])


def test_class_counts_and_indices() -> None:
    t = np.array([2, 0, 2, 2])
    assert class_counts(t, 4).tolist() == [1, 0, 3, 0]
    idx = class_indices(t, 4)
    assert [i.tolist() for i in idx] == [[1], [], [0, 2, 3], []]


def test_split_image_dataset_decode_modes(tmp_path: Path) -> None:
    """``cpu``: uint8 RGB tensors equal to PIL's pixels; ``gpu``: a JPEG's bytes, other formats
    decoded; both name an unreadable file as the PIL path does, or skip it."""
    from balfeat.errors import ConfigError

    (tmp_path / "c").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(tmp_path / "c/a.jpg")
    Image.new("L", (5, 4), color=77).save(tmp_path / "c/b.png")
    entries = [SplitEntry("/c/a.jpg", 0), SplitEntry("/c/b.png", 1)]
    pil = SplitImageDataset(tmp_path, entries)
    cpu = SplitImageDataset(tmp_path, entries, decode="cpu")
    for i in range(2):
        x, label = cpu[i]
        ref = torch.from_numpy(np.array(pil[i][0])).permute(2, 0, 1)
        assert x.dtype == torch.uint8 and x.shape == ref.shape and label == i
        assert (x.int() - ref.int()).abs().float().mean() < 3.0
    gpu = SplitImageDataset(tmp_path, entries, decode="gpu")
    raw, _ = gpu[0]
    assert raw.ndim == 1 and bytes(raw[:3].tolist()) == b"\xff\xd8\xff"
    assert raw.numel() == (tmp_path / "c/a.jpg").stat().st_size
    png, _ = gpu[1]
    assert png.shape == (3, 4, 5) and int(png.float().mean()) == 77
    cpu_t = SplitImageDataset(tmp_path, entries, transform=lambda t: t.shape, decode="cpu")
    assert cpu_t[1] == ((3, 4, 5), 1)
    (tmp_path / "c/b.png").write_bytes(b"not an image")
    for mode in ("cpu", "gpu"):
        with pytest.raises(DataError, match=r"<entries>:2: cannot read image .*b\.png"):
            SplitImageDataset(tmp_path, entries, decode=mode)[1]
        lenient = SplitImageDataset(tmp_path, entries, decode=mode, skip_bad_images=True)
        assert lenient[1][1] == 0 and "b.png" in lenient.bad_images[0][0]
    with pytest.raises(ConfigError, match="transform=None"):
        SplitImageDataset(tmp_path, entries, transform=lambda t: t, decode="gpu")
    with pytest.raises(ConfigError, match="decode='nvjpeg'"):
        SplitImageDataset(tmp_path, entries, decode="nvjpeg")


@pytest.mark.parametrize(
    ("targets", "num_classes", "match"),
    [
        ([0, -1, 2], None, r">= 0, got \[-1, 2\]"),
        ([0, 1, 5], 3, r"\[0, 3\), got \[0, 5\]"),
        ([0.5, 1, 2], None, "integer class ids"),
        ([[0], [1]], None, r"shape \(2, 1\)"),
    ],
)
def test_class_counts_refuses_bad_targets(
    targets: list, num_classes: int | None, match: str
) -> None:
    """Before: a numpy ValueError, a result longer than num_classes, 0.5 counted as class 0."""
    with pytest.raises(DataError, match=match):
        class_counts(targets, num_classes)
    assert class_counts([0.0, 2.0], 3).tolist() == [1, 0, 1]  # whole floats still read


def test_array_dataset_refuses_labels_out_of_range() -> None:
    """Before: a label -1 (or >= num_classes) was kept and failed later, deep in a sampler."""
    with pytest.raises(DataError, match=r"in \[0, 3\), .*values in \[-1, 2\]"):
        ArrayDataset(np.zeros((3, 8, 8), np.uint8), np.array([0, -1, 2]))
    with pytest.raises(DataError, match=r"in \[0, 2\)"):
        ArrayDataset(np.zeros((3, 8, 8), np.uint8), np.array([0, 1, 2]), num_classes=2)
