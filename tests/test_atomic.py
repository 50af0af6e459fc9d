"""The atomic writer: whole files only, and the normal file mode (umask), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from balfeat.atomic import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_mode_follows_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = atomic_write_text(tmp_path / "a.txt", "x\n")
        plain = tmp_path / "plain.txt"
        plain.write_text("x\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE(plain.stat().st_mode)


def test_replacing_keeps_the_normal_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "r.bin"
        atomic_write_bytes(target, lambda fh: fh.write(b"1"))
        atomic_write_bytes(target, lambda fh: fh.write(b"2"))
    finally:
        os.umask(old)
    assert target.read_bytes() == b"2"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old\n")

    def boom(fh: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_bytes(target, boom)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_every_file_balfeat_writes_goes_through_the_atomic_writer() -> None:
    """No plain ``write_text`` / ``write_bytes`` / ``torch.save(obj, path)`` / ``open(.., "w")``
    in the package: a kill mid-write would leave a half-written results or checkpoint file."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "balfeat"
    plain = re.compile(
        r"\.write_text\(|\.write_bytes\(b\"[^\"]|open\([^)]*[\"'][wa]b?[\"']|torch\.save\([^,]+,(?!\s*fh\))"
    )
    allowed = {
        "atomic.py",  # the writer itself
        "metrics_log.py",  # append-only JSON lines; the reader skips a torn last line
    }
    found = [
        f"{p.relative_to(src)}:{i}: {line.strip()}"
        for p in src.rglob("*.py")
        if p.name not in allowed
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if plain.search(line) and "os.fdopen(fd" not in line  # the O_EXCL lock file
    ]
    assert found == []


def test_a_fifo_or_device_is_never_replaced(tmp_path: Path) -> None:
    """A rename over ``/dev/null`` run as root replaces the device with a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="is not a regular file"):
        atomic_write_text(fifo, "x")
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["fifo"]
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path, "x")


def test_disk_full_inside_torch_save_is_the_os_error_naming_the_file(tmp_path: Path) -> None:
    """torch.save's zip writer reports a failed write as RuntimeError('unexpected pos ...')."""
    import errno

    import torch

    class FullAfter:
        def __init__(self, fh: object, room: int) -> None:
            self.fh, self.room = fh, room

        def write(self, data: bytes) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return len(data)

        def flush(self) -> None:
            pass

    target = tmp_path / "x.pth"
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, lambda fh: torch.save(torch.zeros(5000), FullAfter(fh, 1000)))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []
