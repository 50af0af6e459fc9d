# ruff: noqa: F811  (the tiny_imagenet fixture is imported from test_probe_cli)
"""Nothing deleted or replaced unless the user asked (``--force``) and the process holds the
folder's lock: ``probe --out``, ``evaluate --out``, ``export --out`` and ``splits make`` (issue 24,
item 1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_probe_cli import common, tiny_imagenet  # noqa: F401  (fixture)
from test_splits_cli import _pool

from balfeat.cli.main import main
from balfeat.engine.run_dir import LOCK_NAME


@pytest.fixture()
def live_pid() -> Iterator[int]:
    """The pid of a live process (another balfeat "holding" a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        yield proc.pid
    finally:
        proc.communicate(b"")


def _lock(folder: Path, pid: int) -> None:
    (folder / LOCK_NAME).write_text(f"{pid} {socket.gethostname()}\n")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("probe: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_probe_out_with_results_is_refused_replaced_only_with_force_under_the_lock(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    live_pid: int,
) -> None:
    out = tmp_path / "probe"
    assert main(["probe", *common(tiny_imagenet), "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--grouping", "1,1"]) == 0
    assert not (out / LOCK_NAME).exists()  # released
    before = _files(out)
    assert "evaluate/results.json" in before
    capsys.readouterr()
    # a second probe into the folder: refused, nothing touched
    assert main(["probe", *common(tiny_imagenet), "--epochs", "2", "--out", str(out)]) == 2
    err = _error(capsys)
    assert "already holds results" in err and "--force" in err and "results.json" in err
    assert _files(out) == before
    # --force while another process holds the folder: refused, nothing touched
    _lock(out, live_pid)
    assert main(["probe", *common(tiny_imagenet), "--force", "--out", str(out)]) == 2
    assert f"pid {live_pid}" in _error(capsys)
    assert _files(out) == before
    (out / LOCK_NAME).unlink()
    # --force: the old results go, the evaluate/ folder made from them too
    assert (
        main(["probe", *common(tiny_imagenet), "--epochs", "2", "--force", "--out", str(out)]) == 0
    )
    assert json.loads((out / "results.json").read_text())["config"]["epochs"] == 2
    assert not (out / "evaluate").exists() and not (out / LOCK_NAME).exists()


def test_evaluate_out_with_results_is_refused_without_force(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    live_pid: int,
) -> None:
    out = tmp_path / "probe"
    assert main(["probe", *common(tiny_imagenet), "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--grouping", "1,1"]) == 0
    first = _files(out / "evaluate")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--grouping", "2,3"]) == 2
    assert "--force" in _error(capsys)
    assert _files(out / "evaluate") == first
    _lock(out / "evaluate", live_pid)
    assert main(["evaluate", str(out), "--grouping", "2,3", "--force"]) == 2
    assert f"pid {live_pid}" in _error(capsys)
    assert _files(out / "evaluate") == first
    (out / "evaluate" / LOCK_NAME).unlink()
    assert main(["evaluate", str(out), "--grouping", "2,3", "--force"]) == 0
    res = json.loads((out / "evaluate" / "results.json").read_text())
    assert res["grouping"]["many_above"] == 2


def test_export_force_replaces_only_under_the_folders_lock(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    live_pid: int,
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    exp = folder / "bb.pth"
    exp.write_bytes(b"an earlier export")
    ckpt = str(tiny_imagenet["ckpt"])
    capsys.readouterr()
    assert main(["export", ckpt, "--out", str(exp)]) == 2
    assert "--force" in _error(capsys)
    _lock(folder, live_pid)
    assert main(["export", ckpt, "--out", str(exp), "--force"]) == 2
    assert f"pid {live_pid}" in _error(capsys)
    assert exp.read_bytes() == b"an earlier export"
    (folder / LOCK_NAME).unlink()
    assert main(["export", ckpt, "--out", str(exp), "--force"]) == 0
    assert exp.read_bytes() != b"an earlier export"
    assert not (folder / LOCK_NAME).exists()


def test_splits_make_out_existing_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], live_pid: int
) -> None:
    pool = _pool(tmp_path)
    folder = tmp_path / "splits"
    folder.mkdir()
    out = folder / "bal.txt"
    out.write_text("kept\n")
    make = ["splits", "make", "balanced", "--pool", str(pool), "--total", "40", "--out", str(out)]
    capsys.readouterr()
    assert main(make) == 2
    err = _error(capsys)
    assert "already exists" in err and "--force" in err
    _lock(folder, live_pid)
    assert main([*make, "--force"]) == 2
    assert f"pid {live_pid}" in _error(capsys)
    assert out.read_text() == "kept\n"
    (folder / LOCK_NAME).unlink()
    assert main([*make, "--force"]) == 0
    assert out.read_text() != "kept\n" and not (folder / LOCK_NAME).exists()
    # the classes halves alike
    halves = ["splits", "make", "classes", "--split", str(pool), "--out-dir", str(folder)]
    assert main(halves) == 0
    capsys.readouterr()
    assert main(halves) == 2
    assert "--force" in _error(capsys)
    assert main([*halves, "--force"]) == 0
