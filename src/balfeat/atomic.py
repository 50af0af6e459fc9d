"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old file.

Every file balfeat writes (split lists, results, caches, exports, checkpoints) goes through
:func:`atomic_write_bytes`: the content is written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target with ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
