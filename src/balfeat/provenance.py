"""Where a result came from: versions, commit, threads, device — written into every results file.

So that any row of a table can be re-run exactly: the same balfeat commit, the same torch, the
same number of CPU threads (results on CPU depend on it) and the same seed and config.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit of the balfeat source tree (``+dirty`` when it has local changes), or None
    when balfeat is not run from a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def provenance(device: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-ready dict: balfeat version and commit, python/torch/numpy versions, torch CPU
    threads, device, platform, the command line, plus ``seed`` and any ``extra`` items."""
    import numpy as np
    import torch

    from balfeat import __version__

    dev = str(device) if device is not None else None
    out: dict[str, Any] = {
        "balfeat_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": dev,
        "cuda_device": torch.cuda.get_device_name(0)
        if dev and dev.startswith("cuda") and torch.cuda.is_available()
        else None,
        "platform": platform.platform(),
        "argv": list(sys.argv),
    }
    if seed is not None:
        out["seed"] = seed
    out.update(extra)
    return out
