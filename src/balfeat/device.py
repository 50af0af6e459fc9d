"""The one place that decides which device tensors live on. Nothing else calls ``.cuda()``."""

from __future__ import annotations

import torch

from balfeat.distributed import local_rank


def default_device(requested: str = "auto") -> torch.device:
    """Resolve a device name.

    Args:
        requested: ``"auto"`` (this rank's GPU when CUDA is available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: a CUDA device is requested but CUDA is not available.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {requested!r} was requested but CUDA is not available on this machine; "
            "use device=cpu or device=auto"
        )
    return device
