"""Image augmentations of the reference training scripts, for 224-px and small images.

Names (``build_transform(name, image_size, channels)``):

- ``"moco_v1"``: MoCo v1 (He et al., https://arxiv.org/abs/1911.05722): RandomResizedCrop
  (scale 0.2-1), RandomGrayscale 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4), flip.
- ``"moco_v2"``: MoCo v2 "aug-plus" (Chen et al., https://arxiv.org/abs/2003.04297):
  RandomResizedCrop (0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, RandomGrayscale 0.2,
  Gaussian blur (sigma 0.1-2) with p 0.5, flip. The blur is left out for small images
  (``image_size < 64``), where a 23-px kernel would wipe the image, as in CIFAR MoCo recipes.
- ``"supervised"``: RandomResizedCrop (default scale 0.08-1) + flip (the reference ``--slaug``).
- ``"longtail"``: ``"supervised"`` + ColorJitter(0.4, 0.4, 0.4, 0) (classifier-balancing).
- ``"eval"``: Resize(size * 256 / 224) + CenterCrop(size) for large images; for small images
  only a resize to ``image_size`` when the input differs.

All end in ToTensor + Normalize: ImageNet statistics for 3 channels; for 1 channel, the
Fashion-MNIST statistics (mean 0.2860, std 0.3530). Inputs are PIL images of any mode; they are
converted to ``"RGB"`` (channels 3) or ``"L"`` (channels 1) first. With one channel the
saturation/hue jitter and RandomGrayscale are dropped (they do nothing to gray images).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from balfeat.errors import ConfigError

TRANSFORM_NAMES: tuple[str, ...] = ("moco_v1", "moco_v2", "supervised", "longtail", "eval")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.2860,)
GRAY_STD = (0.3530,)
SMALL_IMAGE_LIMIT = 64


class ConvertMode:
    """Convert a PIL image to ``mode`` (``"RGB"`` or ``"L"``) if it is not already."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        """PIL image -> PIL image in ``self.mode``."""
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


class TwoViews:
    """Two independent augmentations of one image: ``x -> [t(x), t(x)]`` (query, key).

    Args:
        transform: the augmentation applied to each view.
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, x: Any) -> list[Any]:
        """PIL image -> ``[view_q, view_k]``, each Shape: (C, H, W)."""
        return [self.transform(x), self.transform(x)]

    def __repr__(self) -> str:
        return f"TwoViews({self.transform!r})"


def _jitter(b: float, c: float, s: float, h: float, channels: int) -> T.ColorJitter:
    if channels == 1:
        return T.ColorJitter(b, c, 0.0, 0.0)
    return T.ColorJitter(b, c, s, h)


def build_transform(
    name: str, image_size: int = 224, channels: int = 3
) -> Callable[[Image.Image], torch.Tensor]:
    """Build one of ``TRANSFORM_NAMES`` for ``image_size``-px outputs with ``channels``.

    Args:
        name: ``"moco_v1"``, ``"moco_v2"``, ``"supervised"``, ``"longtail"`` or ``"eval"``.
        image_size: output side in pixels (224 for ImageNet, 28/32 for small datasets).
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        A callable PIL image -> float tensor. Shape: (channels, image_size, image_size), except
        ``"eval"`` on small images whose input already has another size than ``image_size``
        is resized to ``image_size``.

    Raises:
        ConfigError: unknown name, channels not 1/3, or image_size < 1.
    """
    if name not in TRANSFORM_NAMES:
        raise ConfigError(f"unknown transform {name!r}; use one of {', '.join(TRANSFORM_NAMES)}")
    if channels not in (1, 3):
        raise ConfigError(f"transform channels={channels} must be 1 (grayscale) or 3 (RGB)")
    if image_size < 1:
        raise ConfigError(f"transform image_size={image_size} must be >= 1")
    small = image_size < SMALL_IMAGE_LIMIT
    head: list[Callable[..., Any]] = [ConvertMode("L" if channels == 1 else "RGB")]
    tail: list[Callable[..., Any]] = [
        T.ToTensor(),
        T.Normalize(
            GRAY_MEAN if channels == 1 else IMAGENET_MEAN,
            GRAY_STD if channels == 1 else IMAGENET_STD,
        ),
    ]
    gray: list[Callable[..., Any]] = [T.RandomGrayscale(p=0.2)] if channels == 3 else []
    body: list[Callable[..., Any]]
    if name == "moco_v1":
        body = [
            T.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
            *gray,
            _jitter(0.4, 0.4, 0.4, 0.4, channels),
            T.RandomHorizontalFlip(),
        ]
    elif name == "moco_v2":
        body = [
            T.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
            T.RandomApply([_jitter(0.4, 0.4, 0.4, 0.1, channels)], p=0.8),
            *gray,
        ]
        if not small:
            kernel = 2 * (image_size // 20) + 1  # 23 at 224 px, about 10% of the side
            body.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
        body.append(T.RandomHorizontalFlip())
    elif name == "supervised":
        body = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    elif name == "longtail":
        body = [
            T.RandomResizedCrop(image_size),
            T.RandomHorizontalFlip(),
            _jitter(0.4, 0.4, 0.4, 0.0, channels),
        ]
    elif small:
        body = [T.Resize((image_size, image_size))]
    else:
        body = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    return T.Compose([*head, *body, *tail])
