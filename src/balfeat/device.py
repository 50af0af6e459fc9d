"""The one place that decides which device tensors live on (nothing else calls ``.cuda()``) and
how many CPU threads torch uses."""

from __future__ import annotations

import os

import torch

from balfeat.distributed import local_rank
from balfeat.errors import ConfigError


def default_device(requested: str = "auto") -> torch.device:
    """Resolve a device name.

    Args:
        requested: ``"auto"`` (this rank's GPU when CUDA is available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ConfigError: (a ``ValueError``) a name that is none of these, a CUDA device when CUDA is
            not available, or ``cuda:N`` beyond the GPUs of this machine.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        device = None
    mps = getattr(torch.backends, "mps", None)
    known = ("cpu", "cuda", "mps") if mps is not None and mps.is_available() else ("cpu", "cuda")
    if device is None or device.type not in known:
        raise ConfigError(
            f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N (N = GPU index)"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {requested!r} was requested but CUDA is not available on this machine; "
            "use device=cpu or device=auto"
        )
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(
                f"device {requested!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})"
            )
    return device


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op CPU threads and return the number used.

    Args:
        threads: ``N > 0`` uses N threads; ``0`` (auto) uses every core, or 1 thread when the
            machine is already busy (1-minute load average >= cores): on a contended CPU,
            several OpenMP threads per process spin against each other and run 2-3x slower
            than one. Studies record the number used in every results file (results on CPU
            depend on it).
    """
    if threads <= 0:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0] >= cores
        except OSError:  # pragma: no cover - platforms without getloadavg
            busy = False
        threads = 1 if busy else cores
    torch.set_num_threads(threads)
    return threads
