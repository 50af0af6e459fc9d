"""JPEG decoding backends for image-folder datasets: PIL, torchvision on the CPU, or the GPU.

``data.decode`` picks one:

- ``"pil"``: ``PIL.Image.open`` + the PIL recipes of :mod:`balfeat.data.transforms` (today's
  path, per image in DataLoader workers);
- ``"cpu"``: :func:`torchvision.io.decode_jpeg` on the CPU to a uint8 (C, H, W) tensor, then
  tensor augmentations;
- ``"gpu"``: batched ``decode_jpeg(..., device="cuda")`` (nvJPEG) followed by the on-device
  augmentation :class:`balfeat.data.device_data.DeviceAugment`. Without a CUDA device it falls
  back to ``"cpu"`` with a :class:`DecodeFallbackWarning`, so a config written for a GPU machine
  still runs on a laptop.

:func:`select_decode` makes the choice; :func:`decode_jpegs` decodes a batch of encoded files
with the chosen backend.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

from balfeat.errors import ConfigError

DecodeBackend = Literal["pil", "cpu", "gpu"]
DECODE_BACKENDS: tuple[str, ...] = ("pil", "cpu", "gpu")


class DecodeFallbackWarning(UserWarning):
    """``data.decode=gpu`` was asked for but no CUDA device is available: decoding on the CPU."""


def select_decode(requested: str, cuda_available: bool | None = None) -> DecodeBackend:
    """The backend that will actually decode, for ``data.decode=requested``.

    Args:
        requested: ``"pil"``, ``"cpu"`` or ``"gpu"``.
        cuda_available: whether a CUDA device can be used; default ``torch.cuda.is_available()``.

    Returns:
        ``requested``, except ``"gpu"`` without CUDA, which gives ``"cpu"`` and warns.

    Raises:
        ConfigError: an unknown backend name.
    """
    if requested not in DECODE_BACKENDS:
        raise ConfigError(
            f"data.decode={requested!r} is not a decoder; use one of {', '.join(DECODE_BACKENDS)}"
        )
    if requested == "gpu":
        has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
        if not has_cuda:
            warnings.warn(
                "data.decode=gpu but no CUDA device is available: decoding JPEGs on the CPU "
                "(data.decode=cpu); set data.decode=cpu to silence this warning",
                DecodeFallbackWarning,
                stacklevel=2,
            )
            return "cpu"
    return requested  # type: ignore[return-value]


def decode_jpegs(
    encoded: Sequence[bytes], backend: DecodeBackend, channels: int = 3
) -> list[torch.Tensor]:
    """Decode JPEG files' bytes.

    Args:
        encoded: the files' contents.
        backend: from :func:`select_decode`.
        channels: 3 (RGB) or 1 (gray).

    Returns:
        uint8 tensors, one per image. Shape: (channels, H, W) each; on the GPU for ``"gpu"``.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if channels not in (1, 3):
        raise ConfigError(f"decode channels={channels} must be 1 (gray) or 3 (RGB)")
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    if backend == "pil":
        import numpy as np
        from PIL import Image

        out = []
        for data in encoded:
            img = Image.open(io.BytesIO(data)).convert("RGB" if channels == 3 else "L")
            arr = torch.from_numpy(np.asarray(img).copy())
            out.append(arr.permute(2, 0, 1) if arr.ndim == 3 else arr.unsqueeze(0))
        return out
    raw = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
    if backend == "gpu":
        return list(decode_jpeg(raw, mode=mode, device="cuda"))
    return [decode_jpeg(r, mode=mode) for r in raw]
