from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from balfeat.data import sources
from balfeat.data.sources import (
    FASHION_MNIST_FILES,
    cache_root,
    fetch_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
    load_torchvision_layout,
    read_idx,
)
from balfeat.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    data = _idx_bytes(arr)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(folder: Path, gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 6).astype(np.uint8),
        "test_x": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 2).astype(np.uint8),
    }
    for key, stem in FASHION_MNIST_FILES.items():
        _write_idx(folder / stem, arrays[key], gz)
    return arrays


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALFEAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def test_read_idx_gz_raw_and_int32(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", a, gz=False)
    _write_idx(tmp_path / "b", a, gz=True)
    assert (read_idx(tmp_path / "a") == a).all() and (read_idx(tmp_path / "b.gz") == a).all()
    big = np.array([1, -2, 70000], dtype=">i4")
    _write_idx(tmp_path / "c", big, gz=False)
    assert read_idx(tmp_path / "c").tolist() == [1, -2, 70000]


def test_read_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((2, 2), np.uint8))[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_cache_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BALFEAT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "balfeat"
    monkeypatch.setenv("BALFEAT_CACHE", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own"


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_named_dir_and_npy_cache(tmp_path: Path, gz: bool) -> None:
    arrays = _fake_mnist(tmp_path / "fm", gz=gz)
    data = load_fashion_mnist(tmp_path / "fm", fetch=False)
    assert data.train_x.shape == (6, 28, 28) and data.train_x.dtype == np.uint8
    assert data.train_y.dtype == np.int64 and (data.train_y == arrays["train_y"]).all()
    assert (data.test_x == arrays["test_x"]).all() and len(data.class_names) == 10
    cached = list((tmp_path / "cache" / "fashion-mnist" / "arrays").rglob("*.npy"))
    assert sorted(p.stem for p in cached) == sorted(FASHION_MNIST_FILES)
    # the second load reads the .npy copies, not the IDX files
    marker = next(p for p in cached if p.stem == "train_x")
    np.save(marker, np.zeros((6, 28, 28), np.uint8))
    assert load_fashion_mnist(tmp_path / "fm", fetch=False).train_x.max() == 0
    # without the cache it reads the IDX files again
    assert (load_fashion_mnist(tmp_path / "fm", cache=False).train_x == arrays["train_x"]).all()


def test_find_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_fashion_mnist() is None
    with pytest.raises(DataError, match="not found"):
        load_fashion_mnist(fetch=False)
    _fake_mnist(tmp_path / "cache" / "fashion-mnist", seed=1)
    assert find_fashion_mnist() == tmp_path / "cache" / "fashion-mnist"
    _fake_mnist(tmp_path / "system", seed=2)
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST", tmp_path / "system")
    assert find_fashion_mnist() == tmp_path / "system"
    _fake_mnist(tmp_path / "mine" / "FashionMNIST" / "raw", seed=3)
    assert find_fashion_mnist(tmp_path / "mine") == tmp_path / "mine" / "FashionMNIST" / "raw"
    with pytest.raises(DataError, match="no Fashion-MNIST files"):
        find_fashion_mnist(tmp_path / "empty")


def test_fetch_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources.shutil, "which", lambda tool: None)
    with pytest.raises(DataError, match="apt-get is not installed"):
        fetch_fashion_mnist(tmp_path / "d")
    monkeypatch.setattr(sources.shutil, "which", lambda tool: "/usr/bin/" + tool)

    def no_lists(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[:2] == ["apt-get", "download"]
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package x\n")

    monkeypatch.setattr(sources.subprocess, "run", no_lists)
    with pytest.raises(DataError, match="sudo apt-get update"):
        fetch_fashion_mnist(tmp_path / "d")


def test_torchvision_mnist_layouts(tmp_path: Path) -> None:
    a = _fake_mnist(tmp_path / "MNIST" / "raw", gz=False)
    b = _fake_mnist(tmp_path / "FashionMNIST" / "raw", gz=True, seed=4)
    m = load_torchvision_layout("MNIST", tmp_path)
    assert (m.train_x == a["train_x"]).all() and m.class_names[3] == "3"
    f = load_torchvision_layout("fashion_mnist", tmp_path)
    assert (f.test_y == b["test_y"]).all() and f.class_names[0] == "T-shirt/top"
    with pytest.raises(DataError, match="unknown dataset"):
        load_torchvision_layout("svhn", tmp_path)


def _pickle(path: Path, obj: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # torchvision's files are Python-2 pickles with byte-string keys in latin1
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_torchvision_cifar_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    base = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(base / f"data_batch_{i}", {"data": img, "labels": [i % 10, 0]})
    _pickle(base / "test_batch", {"data": img[:1], "labels": [7]})
    _pickle(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    c10 = load_torchvision_layout("cifar10", tmp_path)
    assert c10.train_x.shape == (10, 32, 32, 3) and c10.train_y.tolist()[:4] == [1, 0, 2, 0]
    # channel-major rows become HWC pixels
    assert c10.train_x[0, 0, 1, 2] == img[0, 2 * 1024 + 1]
    assert c10.test_y.tolist() == [7] and c10.class_names[9] == "c9"
    base = tmp_path / "cifar-100-python"
    _pickle(base / "train", {"data": img, "fine_labels": [5, 99], "coarse_labels": [0, 1]})
    _pickle(base / "test", {"data": img, "fine_labels": [1, 2], "coarse_labels": [0, 1]})
    _pickle(base / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    c100 = load_torchvision_layout("CIFAR-100", tmp_path)
    assert c100.train_y.tolist() == [5, 99] and len(c100.class_names) == 100
    with pytest.raises(DataError, match="missing"):
        load_torchvision_layout("cifar10", tmp_path / "nothing")
    # a truncated download and a batch without its pixels: one clear error each
    good = (tmp_path / "cifar-10-batches-py" / "data_batch_3").read_bytes()
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="data_batch_3 cannot be read as a CIFAR batch"):
        load_torchvision_layout("cifar10", tmp_path)
    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {"labels": [1, 2]})
    with pytest.raises(DataError, match="holds no"):
        load_torchvision_layout("cifar10", tmp_path)


def test_real_fashion_mnist_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real system copy and user cache
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed; run `balfeat data fetch fashion-mnist`")
    data = load_fashion_mnist(fetch=False)
    assert data.train_x.shape == (60000, 28, 28) and data.test_x.shape == (10000, 28, 28)
    assert np.bincount(data.train_y).tolist() == [6000] * 10
    assert np.bincount(data.test_y).tolist() == [1000] * 10
