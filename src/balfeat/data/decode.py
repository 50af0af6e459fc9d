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
with the chosen backend; :func:`decode_image_bytes` decodes one file on the CPU (any format) for
``"cpu"``. For ``"gpu"`` the dataset yields the files' bytes, :func:`collate_encoded` keeps them
as an :class:`EncodedBatch`, and :class:`EncodedBatchAugment` decodes and augments a batch on the
training device (the trainer calls it when a batch reaches the device).

How the ``"gpu"`` path matches the PIL recipe (same :data:`balfeat.data.recipes.RECIPES` entry):
RandomResizedCrop per image (torchvision's sampling: 10 tries, then a centre crop with the ratio
clamped) cut from the decoded image and resized with antialiased bilinear interpolation, then
flip, colour jitter and grayscale by :class:`~balfeat.data.device_data.DeviceAugment` on the
stacked crops, then the Gaussian blur per sample (the blur is linear with weights summing to one
and symmetric, so applying it after the flip, gray conversion and normalisation gives the same
image as before them). Differences by design: the jitter order is fixed (brightness, contrast,
saturation, hue; torchvision shuffles it), and random parameters come from a generator seeded by
the trainer per ``(seed, rank, epoch, batch)``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from balfeat.data.device_data import DeviceAugment
from balfeat.data.recipes import SMALL_IMAGE_LIMIT, get_device_recipe
from balfeat.data.tensor_ops import TensorChannels, crop_boxes, gaussian_blur_batch
from balfeat.errors import ConfigError, DataError

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


#: The first bytes of every JPEG file (SOI marker + the next marker's 0xFF).
JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    """Whether encoded file contents (bytes, or a uint8 1-D tensor) start like a JPEG."""
    head = bytes(data[:3].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:3])
    return head == JPEG_MAGIC


def decode_image_bytes(data: bytes, channels: int = 3) -> torch.Tensor:
    """Decode one image file's contents on the CPU to a uint8 tensor.

    JPEGs go through :func:`torchvision.io.decode_jpeg` (libjpeg-turbo); other formats that
    torchvision reads (PNG, GIF, WebP) through :func:`torchvision.io.decode_image`; anything else
    torchvision refuses (BMP, TIFF, a JPEG variant it cannot read) through PIL, so every file the
    PIL path opens also opens here. No EXIF rotation, as the PIL path.

    Args:
        data: the file's contents.
        channels: 3 (RGB) or 1 (gray).

    Returns:
        uint8 tensor. Shape: (channels, H, W).

    Raises:
        OSError / ValueError: the file is not an image PIL can read either (the dataset turns
            this into a DataError naming the file).
    """
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        if is_jpeg(data):
            return decode_jpeg(raw, mode=mode)
        return decode_image(raw, mode=mode)
    except RuntimeError:
        return decode_jpegs([data], "pil", channels)[0]


class EncodedBatch:
    """A batch of images as the ``"gpu"`` path's dataset yields them, not yet decoded.

    Args:
        images: one uint8 tensor per image: the file's bytes Shape: (num_bytes,) for a JPEG
            (decoded on the device), or an image decoded on the CPU Shape: (C, H, W) (files
            nvJPEG cannot read, e.g. PNG).

    The DataLoader pins it with :meth:`pin_memory` (``pin_memory=True``), as a tensor.
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def pin_memory(self) -> EncodedBatch:
        """The same batch in pinned host memory (faster, asynchronous copies to the GPU)."""
        return EncodedBatch([x.pin_memory() for x in self.images])

    def __repr__(self) -> str:
        return f"EncodedBatch({len(self.images)} images)"


def collate_encoded(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[EncodedBatch, torch.Tensor]:
    """DataLoader ``collate_fn`` of the ``"gpu"`` path: keep the images as a list.

    Args:
        items: ``(image, label)`` pairs; images of different sizes and byte lengths.

    Returns:
        The :class:`EncodedBatch` and the labels, int64 Shape: (B,).
    """
    images = [x for x, _ in items]
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return EncodedBatch(images), labels


class EncodedBatchAugment:
    """Decode an :class:`EncodedBatch` on the training device and apply a recipe per sample.

    Args:
        recipe: a :data:`balfeat.data.recipes.RECIPES` name (``"none"`` is ``"eval"``).
        image_size: output side in pixels.
        channels: 1 or 3.
        views: how many independent augmentations of each image (2: MoCo/KCL query and key).
        backend: ``"gpu"`` (nvJPEG, the images end on the CUDA ``device``) or ``"cpu"``
            (torchvision on the CPU, then moved to ``device``; the same code path, for tests
            and machines without CUDA).

    Calling it with ``(batch, device, generator)`` gives normalised float32 images on ``device``,
    Shape: (B, channels, image_size, image_size), or a list of ``views`` such tensors.
    """

    def __init__(
        self,
        recipe: str,
        image_size: int,
        channels: int = 3,
        views: int = 1,
        backend: DecodeBackend = "gpu",
    ) -> None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ConfigError(f"EncodedBatchAugment views={views!r} must be an integer >= 1")
        if backend not in ("gpu", "cpu"):
            raise ConfigError(f"EncodedBatchAugment backend={backend!r} must be 'gpu' or 'cpu'")
        self.name = "eval" if recipe == "none" else recipe
        r = get_device_recipe(self.name, "the GPU decoder (data.decode=gpu)")
        self.recipe = r
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.views = views
        self.backend: DecodeBackend = backend
        small = image_size < SMALL_IMAGE_LIMIT
        self.post = DeviceAugment.from_recipe(self.name, image_size, channels, crop=False)
        self.blur = (
            r.blur_sigma if (r.blur_sigma is not None and r.blur_p > 0 and not small) else None
        )
        self.blur_p = r.blur_p
        self.blur_kernel = 2 * (image_size // 20) + 1  # as build_transform
        self.eval_resize = (
            round(image_size * 256 / 224) if (self.name == "eval" and not small) else None
        )

    def __repr__(self) -> str:
        return (
            f"EncodedBatchAugment({self.name!r}, image_size={self.image_size}, "
            f"channels={self.channels}, views={self.views}, backend={self.backend!r})"
        )

    def decode(self, batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
        """uint8 images on ``device``, Shape: (channels, H, W) each, in batch order.

        Raises:
            DataError: a file of the batch cannot be decoded (naming its position).
        """
        out: list[torch.Tensor | None] = [None] * len(batch)
        enc = [i for i, x in enumerate(batch.images) if x.ndim == 1]
        if enc:
            raw = [batch.images[i] for i in enc]
            try:
                decoded = _decode_raw(raw, self.backend, self.channels, device)
            except RuntimeError as err:
                bad = _first_undecodable(raw, self.backend, self.channels, device)
                raise DataError(
                    f"cannot decode image {enc[bad] if bad is not None else '?'} of a batch of "
                    f"{len(batch)} on {self.backend} ({err}); find and skip the bad file with "
                    "data.decode=cpu data.skip_bad_images=true"
                ) from err
            for i, img in zip(enc, decoded, strict=True):
                out[i] = img
        to_channels = TensorChannels(self.channels)
        for i, x in enumerate(batch.images):
            if x.ndim != 1:
                out[i] = to_channels(x.to(device, non_blocking=True))
        return [x.to(device, non_blocking=True) for x in out if x is not None]

    def _geometry(self, img: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        """Crop ``box`` (top, left, h, w) of a uint8 (C, H, W) image and resize it.

        Returns:
            float32 in [0, 1]. Shape: (1, C, image_size, image_size).
        """
        s = self.image_size
        if box is not None:  # crop the uint8 image first: only the crop is converted
            top, left, h, w = (int(v) for v in box.tolist())
            img = img[:, top : top + h, left : left + w]
        x = img.unsqueeze(0).float().div_(255.0)
        if box is not None:
            size = (s, s)
        elif self.eval_resize is not None:  # Resize(shorter side) + CenterCrop, as "eval"
            _, _, h, w = x.shape
            short = self.eval_resize
            size = (short, max(1, int(short * w / h))) if h <= w else (int(short * h / w), short)
        else:
            size = (s, s)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if box is None and self.eval_resize is not None:
            _, _, h, w = x.shape
            top, left = round((h - s) / 2.0), round((w - s) / 2.0)
            x = x[:, :, top : top + s, left : left + s]
        return x.clamp_(0.0, 1.0)

    def __call__(
        self, batch: EncodedBatch, device: torch.device, generator: torch.Generator
    ) -> Any:
        """Decode and augment a batch.

        Args:
            batch: from :func:`collate_encoded`.
            device: where the output lives (CUDA for ``backend="gpu"``).
            generator: CPU generator of every random draw (crops, flips, jitter, blur).

        Returns:
            float32 Shape: (B, channels, image_size, image_size), or a list of ``views`` of them.
        """
        images = self.decode(batch, device)
        heights = torch.tensor([x.shape[-2] for x in images], dtype=torch.int64)
        widths = torch.tensor([x.shape[-1] for x in images], dtype=torch.int64)
        views = []
        for _ in range(self.views):
            r = self.recipe
            boxes = (
                crop_boxes(heights, widths, r.crop_scale, r.crop_ratio, generator)
                if r.crop_scale is not None
                else None
            )
            x = torch.cat([
                self._geometry(img, boxes[i] if boxes is not None else None)
                for i, img in enumerate(images)
            ])  # fmt: skip
            x = self.post(x, generator)  # flip, jitter, grayscale, normalise
            if self.blur is not None:
                n = len(images)
                apply = torch.rand(n, generator=generator) < self.blur_p
                sigma = torch.empty(n).uniform_(*self.blur, generator=generator)
                x = gaussian_blur_batch(x, sigma, apply, self.blur_kernel)
            views.append(x)
        return views[0] if self.views == 1 else views


def _decode_raw(
    raw: list[torch.Tensor], backend: DecodeBackend, channels: int, device: torch.device
) -> list[torch.Tensor]:
    """JPEG bytes -> uint8 (channels, H, W) images (on the CUDA ``device`` for ``"gpu"``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    if backend == "gpu":
        return list(decode_jpeg(raw, mode=mode, device=device))
    return [decode_jpeg(r, mode=mode) for r in raw]


def _first_undecodable(
    raw: list[torch.Tensor], backend: DecodeBackend, channels: int, device: torch.device
) -> int | None:
    """Position of the first file of ``raw`` that does not decode alone, or None."""
    for i, r in enumerate(raw):
        try:
            _decode_raw([r], backend, channels, device)
        except RuntimeError:
            return i
    return None
