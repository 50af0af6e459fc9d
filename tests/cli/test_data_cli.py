from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from balfeat.cli.main import main
from balfeat.data import sources
from balfeat.data.sources import FASHION_MNIST_FILES


def _fake_fashion_mnist(folder: Path) -> None:
    folder.mkdir(parents=True)
    shapes = {"train_x": (4, 28, 28), "train_y": (4,), "test_x": (3, 28, 28), "test_y": (3,)}
    for key, stem in FASHION_MNIST_FILES.items():
        arr = np.zeros(shapes[key], np.uint8)
        head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        with gzip.open(folder / f"{stem}.gz", "wb") as f:
            f.write(head + arr.tobytes())


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALFEAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def test_fetch_with_dir_prints_location_and_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_fashion_mnist(tmp_path / "fm")
    assert main(["data", "fetch", "fashion-mnist", "--dir", str(tmp_path / "fm")]) == 0
    out = capsys.readouterr().out
    assert f"fashion-mnist: {tmp_path / 'fm'}" in out
    assert "train (4, 28, 28) uint8" in out and "test  (3, 28, 28)" in out


def test_fetch_bad_dir_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "fetch", "fashion-mnist", "--dir", str(tmp_path)]) == 2
    assert "no Fashion-MNIST files" in capsys.readouterr().err


def test_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'cache'}" in out and "not found" in out
    _fake_fashion_mnist(tmp_path / "cache" / "fashion-mnist")
    assert main(["data", "info"]) == 0
    assert f"fashion-mnist: {tmp_path / 'cache' / 'fashion-mnist'}" in capsys.readouterr().out


def test_cache_under_a_file_is_one_line_error_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_fashion_mnist(tmp_path / "fm")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("BALFEAT_CACHE", str(blocker / "cache"))
    assert main(["data", "fetch", "fashion-mnist", "--dir", str(tmp_path / "fm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("balfeat data fetch: error: cache folder ($BALFEAT_CACHE)")
    assert "is a file" in err
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("cmd", ["fetch", "info"])
def test_dir_must_be_an_existing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: str
) -> None:
    argv = ["data", cmd] + (["fashion-mnist"] if cmd == "fetch" else [])
    assert main([*argv, "--dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    nope = str(tmp_path / "nope")
    expected = f"argument --dir: directory {nope!r} does not exist; check the path\n"
    assert err == f"balfeat data {cmd}: error: {expected}"
