# ruff: noqa: F811  (the tiny_imagenet fixture is imported from test_probe_cli)
"""Nothing deleted or replaced unless the user asked (``--force``) and the process holds the
folder's lock: ``probe --out``, ``evaluate --out``, ``export --out`` and ``splits make`` (issue 24,
item 1)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_errors import one_error_line as _error
from test_probe_cli import common, tiny_imagenet  # noqa: F401  (fixture)
from test_splits_cli import _pool

from balfeat.cli.main import main
from balfeat.engine.run_dir import LOCK_NAME


def _lock(folder: Path, pid: int) -> None:
    (folder / LOCK_NAME).write_text(f"{pid} {socket.gethostname()}\n")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _refused_until_forced_under_the_lock(
    argv: list[str],
    lock_dir: Path,
    kept: Callable[[], object],
    capsys: pytest.CaptureFixture[str],
    live_pid: int,
    words: tuple[str, ...] = ("--force",),
) -> None:
    """``argv`` is refused without ``--force`` (its one error line naming each of ``words``),
    refused with ``--force`` while another process holds ``lock_dir`` (naming its pid), with
    ``kept()`` unchanged both times; with ``--force`` and the lock gone it runs, and leaves no
    lock behind."""
    before = kept()
    capsys.readouterr()
    assert main(argv) == 2
    err = _error(capsys)
    assert all(w in err for w in words), err
    assert kept() == before
    _lock(lock_dir, live_pid)
    assert main([*argv, "--force"]) == 2
    assert f"pid {live_pid}" in _error(capsys)
    assert kept() == before
    (lock_dir / LOCK_NAME).unlink()
    assert main([*argv, "--force"]) == 0
    assert not (lock_dir / LOCK_NAME).exists()


@pytest.fixture()
def probed(tiny_imagenet: dict[str, Path], tmp_path: Path) -> Path:
    """A probe's folder with its results and an ``evaluate/`` folder made from them."""
    out = tmp_path / "probe"
    assert main(["probe", *common(tiny_imagenet), "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--grouping", "1,1"]) == 0
    return out


def test_probe_out_with_results_is_refused_replaced_only_with_force_under_the_lock(
    tiny_imagenet: dict[str, Path], probed: Path, capsys: pytest.CaptureFixture[str], live_pid: int
) -> None:
    out = probed
    assert not (out / LOCK_NAME).exists()  # released
    assert "evaluate/results.json" in _files(out)
    # a second probe into the folder: refused, nothing touched, also under another's lock
    again = ["probe", *common(tiny_imagenet), "--epochs", "2", "--out", str(out)]
    words = ("already holds results", "--force", "results.json")
    _refused_until_forced_under_the_lock(again, out, lambda: _files(out), capsys, live_pid, words)
    # --force: the old results go, the evaluate/ folder made from them too
    assert json.loads((out / "results.json").read_text())["config"]["epochs"] == 2
    assert not (out / "evaluate").exists()


def test_evaluate_out_with_results_is_refused_without_force(
    probed: Path, capsys: pytest.CaptureFixture[str], live_pid: int
) -> None:
    folder = probed / "evaluate"
    again = ["evaluate", str(probed), "--grouping", "2,3"]
    _refused_until_forced_under_the_lock(again, folder, lambda: _files(folder), capsys, live_pid)
    res = json.loads((folder / "results.json").read_text())
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
    export = ["export", str(tiny_imagenet["ckpt"]), "--out", str(exp)]
    _refused_until_forced_under_the_lock(export, folder, exp.read_bytes, capsys, live_pid)
    assert exp.read_bytes() != b"an earlier export"


def test_splits_make_out_existing_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], live_pid: int
) -> None:
    pool = _pool(tmp_path)
    folder = tmp_path / "splits"
    folder.mkdir()
    out = folder / "bal.txt"
    out.write_text("kept\n")
    make = ["splits", "make", "balanced", "--pool", str(pool), "--total", "40", "--out", str(out)]
    words = ("already exists", "--force")
    _refused_until_forced_under_the_lock(make, folder, out.read_text, capsys, live_pid, words)
    assert out.read_text() != "kept\n"
    # the classes halves alike
    halves = ["splits", "make", "classes", "--split", str(pool), "--out-dir", str(folder)]
    assert main(halves) == 0
    capsys.readouterr()
    assert main(halves) == 2
    assert "--force" in _error(capsys)
    assert main([*halves, "--force"]) == 0
