"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old file.

Every file balfeat writes (split lists, results, caches, exports, checkpoints) goes through
:func:`atomic_write_bytes`: the content is written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target with ``os.replace``. The file gets the mode a
plain ``open(path, "w")`` would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``,
so people sharing a machine can read results the same way as any other file.

Only a regular file (or nothing) is ever replaced: renaming over a device, pipe or socket would
swap ``/dev/null`` for a regular file when run as root. A write that fails because the disk is
full raises that ``OSError`` (naming the file), also where ``torch.save`` reports it as its own
``RuntimeError``.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_replaceable(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` is absent or a regular file (a symbolic link counts as
    what it points to: the rename replaces the link itself)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file to write", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(
            errno.EEXIST,
            "is not a regular file (a device, pipe or socket) and is never replaced; write to "
            "a file path",
            str(path),
        )


def _os_error_behind(err: BaseException, path: Path) -> OSError | None:
    """The ``OSError`` that caused ``err`` (``err`` itself, or one in its context chain, as when
    ``torch.save``'s writer turns a failed write into a ``RuntimeError``), with ``path`` as its
    file name when it has none; ``None`` when there is no such error."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if seen is None or seen.filename or seen.errno is None:
        return seen
    return OSError(seen.errno, seen.strerror, str(path))


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path``.

    Args:
        path: the target; its folder is created if needed.
        write: writes the content into the open file it is given.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: ``path`` is a directory, device, pipe or socket; or the write failed (disk
            full, quota), naming ``path``. Nothing is left behind then.
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error_behind(err, path) if isinstance(err, (OSError, RuntimeError)) else None
        if cause is not None and cause is not err:
            raise cause from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, byte for byte (no newline translation)."""
    data = text.encode("utf-8")
    return atomic_write_bytes(path, lambda fh: fh.write(data))
