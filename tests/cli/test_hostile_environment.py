"""Every command in a hostile environment: signals, a reader that goes away, a full disk, a FIFO
where a file is written, sizes no memory holds. Each failure is one line (or, for a reader that
has gone, silence) and leaves no temporary file, lock or half-written output behind."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from balfeat.cli.main import BROKEN_PIPE_STATUS, main

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture()
def scratch(tmp_path: Path) -> dict[str, Path]:
    """A small checkpoint and a split pool."""
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("resnet20", in_channels=3)
    model = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model, "epoch": 1, "method": "sl", "backbone": "resnet20"}, ckpt)
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"/n0{c}/{i}.png {c}\n" for c in range(3) for i in range(4)))
    return {"ckpt": ckpt, "pool": pool, "dir": tmp_path}


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of an atomic write and lock files under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(".tmp") or p.name == ".balfeat.lock"
    )


# --- stdout whose reader has gone (``balfeat ... | head -1``) ----------------------------------


@pytest.mark.parametrize(
    "argv",
    [["pretrain", "--show-config"], ["splits", "stats", "{pool}"], ["data", "info"]],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_reader_that_has_gone_ends_the_command_quietly(
    argv: list[str], scratch: dict[str, Path]
) -> None:
    argv = [a.format(**scratch) for a in argv]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "balfeat", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=scratch["dir"],
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == "", proc.stderr  # no "error: broken pipe", no "Exception ignored"
    assert proc.returncode == BROKEN_PIPE_STATUS


# --- SIGTERM while a command writes its output -------------------------------------------------

_TERM_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys
    real_fsync = os.fsync

    def fsync_then_terminated(fd):  # every atomic write fsyncs its temporary file
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)

    os.fsync = fsync_then_terminated
    from balfeat.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "{ckpt}", "--out", "{dir}/out/backbone.pth"],
        [
            "splits",
            "make",
            "balanced",
            "--pool",
            "{pool}",
            "--total",
            "6",
            "--out",
            "{dir}/out/lt0.txt",
        ],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_sigterm_while_writing_unwinds_as_ctrl_c(argv: list[str], scratch: dict[str, Path]) -> None:
    argv = [a.format(**scratch) for a in argv]
    script = scratch["dir"] / "term.py"
    script.write_text(_TERM_WHILE_WRITING)
    proc = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=scratch["dir"],
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("interrupted by SIGTERM"), proc.stderr
    out = scratch["dir"] / "out"
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    assert _leftovers(scratch["dir"]) == []


def test_stop_signals_are_restored_after_the_command(scratch: dict[str, Path]) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert main(["splits", "stats", str(scratch["pool"])]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# --- a full disk --------------------------------------------------------------------------------


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, fh: Any, room: int) -> None:
        self.fh, self.room = fh, room

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return int(self.fh.write(data))

    def fileno(self) -> int:
        return int(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()
        super().close()


@pytest.mark.parametrize("room", [0, 2000])  # fails at once / inside torch.save's zip writer
def test_disk_full_during_export_is_one_line_and_leaves_nothing(
    room: int,
    scratch: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import balfeat.atomic

    real_fdopen = os.fdopen
    monkeypatch.setattr(
        balfeat.atomic.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room)
    )
    target = scratch["dir"] / "out" / "backbone.pth"
    code = main(["export", str(scratch["ckpt"]), "--out", str(target)])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"balfeat export: error: {target}: no space left on device"), (
        err
    )
    assert not target.exists() and _leftovers(scratch["dir"]) == []


# --- a FIFO (or device) where an output goes ----------------------------------------------------


def test_force_never_replaces_a_fifo(
    scratch: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """As root a rename over /dev/null replaces the device with a regular file."""
    fifo = scratch["dir"] / "fifo"
    os.mkfifo(fifo)
    argv = ["export", str(scratch["ckpt"]), "--out", str(fifo), "--force"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err and len(err.splitlines()) == 1, err
    assert fifo.is_fifo()


# --- sizes no memory holds ----------------------------------------------------------------------


def test_a_size_no_memory_holds_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "pretrain", "--quiet", "data.dataset=synthetic", f"data.synthetic_size={10**17}",
        "model.backbone=resnet20", "run.device=cpu", f"run.output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "out of memory" in err and "ask for less" in err
    assert not (tmp_path / "run").exists() or _leftovers(tmp_path) == []
