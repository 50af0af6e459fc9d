"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old file.

Every file balfeat writes (split lists, results, caches, exports, checkpoints) goes through
:func:`atomic_write_bytes`: the content is written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target with ``os.replace``. The file gets the mode a
plain ``open(path, "w")`` would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``,
so people sharing a machine can read results the same way as any other file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path``.

    Args:
        path: the target; its folder is created if needed.
        write: writes the content into the open file it is given.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, byte for byte (no newline translation)."""
    data = text.encode("utf-8")
    return atomic_write_bytes(path, lambda fh: fh.write(data))
