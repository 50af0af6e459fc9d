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
- ``"none"``: only a resize to ``image_size`` when the input differs.
- ``"randcls"``, ``"randclsstack"``, ``"paco_sim"``, ``"bcl_sim"``: the views of the PaCo / GPaCo
  (Cui et al., https://arxiv.org/abs/2107.12028, https://arxiv.org/abs/2209.12400) and BCL (Zhu
  et al., https://arxiv.org/abs/2207.09052) training scripts; the first two end in
  :class:`balfeat.data.randaugment.RandAugment` (``rand-n2-m10-mstd0.5``), applied after the flip.
- ``"cifar_autoaug_cutout"``: PaCo's CIFAR query view: RandomCrop(size, padding 4), flip,
  torchvision's AutoAugment CIFAR-10 policy (fill 128), ToTensor, :class:`Cutout` (16 px).

Multi-view names (``paco_randcls_sim``, ``gpaco_randcls_randclsstack``, ``bcl_randcls_sim``; see
:data:`balfeat.data.recipes.VIEW_PAIRS`) give one recipe per view: build them with
:func:`build_view_transforms` and wrap them in :class:`MultiView` (:class:`TwoViews` for two).

The parameters live in one table, :data:`balfeat.data.recipes.RECIPES`, which the on-device path
(:class:`balfeat.data.device_data.DeviceAugment`) reads too. Ops run in one fixed order for all
recipes: crop, jitter, grayscale, blur, flip, AutoAugment, RandAugment, (to tensor) Cutout (MoCo
v1's reference applies grayscale before the jitter; the two orders differ only through the hue
shift of a sample that is also grayed).

All end in ToTensor + Normalize: ImageNet statistics for 3 channels; for 1 channel, the
Fashion-MNIST statistics (mean 0.2860, std 0.3530). Inputs are PIL images of any mode; they are
converted to ``"RGB"`` (channels 3) or ``"L"`` (channels 1) first. With one channel the
saturation/hue jitter and RandomGrayscale are dropped (they do nothing to gray images).

:func:`build_tensor_transform` is the same recipe for uint8 (C, H, W) tensors (``data.decode=cpu``:
images decoded by ``torchvision.io.decode_jpeg``): the same torchvision ops in the same order, with
ToTensor replaced by ConvertImageDtype(float32) right after the crop/resize (the crop and resize
run on uint8, as PIL does; jitter, grayscale, blur and flip on float). Its Gaussian blur is
:class:`SeparableGaussianBlur`: torchvision's kernel, sigma draw and reflect padding, applied as
two 1-D convolutions (the same image, ~10x fewer operations than torchvision's 2-D kernel, which
dominates the MoCo v2 recipe's cost at 224 px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from balfeat.data.randaugment import RandAugment
from balfeat.data.recipes import (
    AUGMENTATION_NAMES,
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPE_NAMES,
    SMALL_IMAGE_LIMIT,
    get_recipe,
    normalisation,
    view_set,
)
from balfeat.data.tensor_ops import TensorChannels, gaussian_blur_batch
from balfeat.errors import ConfigError

TRANSFORM_NAMES: tuple[str, ...] = RECIPE_NAMES
__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SMALL_IMAGE_LIMIT",
    "TRANSFORM_NAMES",
    "ConvertMode",
    "Cutout",
    "MultiView",
    "SeparableGaussianBlur",
    "TensorChannels",
    "TwoViews",
    "build_tensor_transform",
    "build_transform",
    "build_view_transforms",
]  # fmt: skip


class ConvertMode:
    """Convert a PIL image to ``mode`` (``"RGB"`` or ``"L"``) if it is not already."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        """PIL image -> PIL image in ``self.mode``."""
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


class SeparableGaussianBlur:
    """torchvision's ``GaussianBlur(kernel_size, sigma)`` as two 1-D passes, for float tensors
    and PIL images.

    Draws sigma as torchvision does (``GaussianBlur.get_params``: one uniform draw from the torch
    RNG), builds the same kernel (outer product of two 1-D Gaussians) and pads by reflection, so
    the output equals torchvision's up to float rounding. A PIL image goes the way torchvision
    takes it (uint8 tensor, float blur, rounded back to uint8, same mode): at 224 px and kernel 23
    this is 2.8 ms against torchvision's 9.2 ms (one thread, measured), and about 0.003% of the
    pixels differ from torchvision's by one grey level (float summation order at .5).

    Args:
        kernel_size: odd kernel side.
        sigma: (min, max) of the uniform sigma draw.
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float]) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"SeparableGaussianBlur kernel_size={kernel_size} must be odd")
        self.kernel_size = kernel_size
        self.sigma = sigma

    def __call__(self, img: Any) -> Any:
        """float or uint8 tensor (C, H, W) -> the same dtype, or PIL image -> PIL image of the
        same mode (integer images are rounded back, as torchvision does)."""
        from torchvision.transforms import functional as TF

        s = torch.tensor([T.GaussianBlur.get_params(self.sigma[0], self.sigma[1])])
        one = torch.ones(1, dtype=torch.bool)
        pil = isinstance(img, Image.Image)
        x = TF.pil_to_tensor(img) if pil else img
        if x.is_floating_point():
            return gaussian_blur_batch(x.unsqueeze(0), s, one, self.kernel_size)[0]
        out = gaussian_blur_batch(x.float().unsqueeze(0), s, one, self.kernel_size)[0]
        out = out.round_().clamp_(0, 255).to(x.dtype)
        return TF.to_pil_image(out, mode=img.mode) if pil else out

    def __repr__(self) -> str:
        return f"SeparableGaussianBlur(kernel_size={self.kernel_size}, sigma={self.sigma})"


class Cutout:
    """Zero one ``length`` x ``length`` square of a float image (DeVries & Taylor,
    https://arxiv.org/abs/1708.04552), as PaCo's CIFAR view does it: the centre is uniform over
    the image, the square is clipped at the borders, and it is applied to every image.

    Args:
        length: side of the square in pixels (16 for CIFAR).
    """

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ConfigError(f"Cutout length={length} must be >= 1")
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """float Shape: (C, H, W) -> (C, H, W) with the square set to 0."""
        h, w = img.shape[-2], img.shape[-1]
        y = int(torch.randint(h, ()).item())
        x = int(torch.randint(w, ()).item())
        half = self.length // 2
        out = img.clone()
        out[..., max(0, y - half) : min(h, y + half), max(0, x - half) : min(w, x + half)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class MultiView:
    """Independent augmentations of one image, one per view: ``x -> [t(x) for t in transforms]``.

    Args:
        transforms: one pipeline per view, in view order; the same object may serve several
            views (independent draws of one recipe).
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        if not transforms:
            raise ConfigError("MultiView needs at least one transform")
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> list[Any]:
        """PIL image (or uint8 tensor) -> one view per transform, each Shape: (C, H, W)."""
        return [t(x) for t in self.transforms]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(t) for t in self.transforms)})"


class TwoViews(MultiView):
    """Two views: ``x -> [t_q(x), t_k(x)]`` (query, key).

    Args:
        transform: the augmentation of the first view (query), and of both when
            ``transform_k`` is ``None``.
        transform_k: the augmentation of the second view (key), when it differs (PaCo's
            RandAugment query and SimCLR-like key).
    """

    def __init__(
        self, transform: Callable[[Any], Any], transform_k: Callable[[Any], Any] | None = None
    ) -> None:
        super().__init__([transform, transform if transform_k is None else transform_k])

    @property
    def transform(self) -> Callable[[Any], Any]:
        """The first view's pipeline."""
        return self.transforms[0]

    @property
    def transform_k(self) -> Callable[[Any], Any]:
        """The second view's pipeline."""
        return self.transforms[1]

    def __repr__(self) -> str:
        if self.transform_k is self.transform:
            return f"TwoViews({self.transform!r})"
        return f"TwoViews({self.transform!r}, {self.transform_k!r})"


def build_transform(
    name: str, image_size: int = 224, channels: int = 3
) -> Callable[[Image.Image], torch.Tensor]:
    """Build one of ``TRANSFORM_NAMES`` for ``image_size``-px outputs with ``channels``.

    The pipeline is read from :data:`balfeat.data.recipes.RECIPES` (shared with the on-device
    path), in the order RandomResizedCrop, colour jitter (``RandomApply`` when its p < 1),
    RandomGrayscale, Gaussian blur (large images only), horizontal flip, ToTensor, Normalize.

    Args:
        name: ``"moco_v1"``, ``"moco_v2"``, ``"supervised"``, ``"longtail"``, ``"eval"`` or
            ``"none"``.
        image_size: output side in pixels (224 for ImageNet, 28/32 for small datasets).
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        A callable PIL image -> float tensor. Shape: (channels, image_size, image_size), except
        ``"eval"``/``"none"`` on small images whose input already has another size than
        ``image_size`` is resized to ``image_size``.

    Raises:
        ConfigError: unknown name, channels not 1/3, or image_size < 1.
    """
    _check(name, image_size, channels)
    return _build(name, image_size, channels, tensor=False)


def build_tensor_transform(
    name: str, image_size: int = 224, channels: int = 3
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`build_transform` for uint8 image tensors (``data.decode=cpu``).

    The same ops from the same :data:`~balfeat.data.recipes.RECIPES` entry and in the same order;
    the crop/resize runs on uint8 (antialiased bilinear, as PIL's resize), then
    ConvertImageDtype(float32) takes the place of ToTensor, and jitter, grayscale, blur and flip
    run on float tensors in [0, 1].

    Args:
        name: as :func:`build_transform`.
        image_size: output side in pixels.
        channels: 1 or 3; the input may have 1, 3 or 4 channels (converted as
            :class:`TensorChannels`).

    Returns:
        A callable uint8 tensor Shape: (C, H, W) -> float32 tensor
        Shape: (channels, image_size, image_size) (same exceptions as :func:`build_transform`).

    Raises:
        ConfigError: unknown name, channels not 1/3, or image_size < 1.
    """
    _check(name, image_size, channels)
    return _build(name, image_size, channels, tensor=True)


def build_view_transforms(
    name: str, image_size: int = 224, channels: int = 3, tensor: bool = False, views: int = 2
) -> tuple[Callable[[Any], torch.Tensor], ...]:
    """The transforms of the ``views`` crops of augmentation ``name``.

    Args:
        name: a recipe name (every view the same recipe, independent draws) or a multi-view name
            of :data:`balfeat.data.recipes.VIEW_PAIRS` (``"paco_randcls_sim"``, ...); views past
            its recipes repeat the last (:func:`balfeat.data.recipes.view_set`).
        image_size: output side in pixels.
        channels: 1 or 3.
        tensor: build :func:`build_tensor_transform` pipelines (uint8 tensor input) instead of
            PIL ones.
        views: how many crops.

    Returns:
        One transform per view; views of the same recipe share one object.

    Raises:
        ConfigError: unknown name, channels not 1/3, image_size < 1 or views < 1.
    """
    make = build_tensor_transform if tensor else build_transform
    built: dict[str, Callable[[Any], torch.Tensor]] = {}
    for recipe in view_set(name, views):
        if recipe not in built:
            built[recipe] = make(recipe, image_size, channels)
    return tuple(built[r] for r in view_set(name, views))


def _check(name: str, image_size: int, channels: int) -> None:
    if name in AUGMENTATION_NAMES and name not in TRANSFORM_NAMES:
        raise ConfigError(
            f"augmentation {name!r} gives two different views: build it with "
            "build_view_transforms (a TwoViews pair)"
        )
    if name not in TRANSFORM_NAMES:
        raise ConfigError(f"unknown transform {name!r}; use one of {', '.join(TRANSFORM_NAMES)}")
    if channels not in (1, 3):
        raise ConfigError(f"transform channels={channels} must be 1 (grayscale) or 3 (RGB)")
    if image_size < 1:
        raise ConfigError(f"transform image_size={image_size} must be >= 1")


def _build(name: str, image_size: int, channels: int, tensor: bool) -> Any:
    """The pipeline of recipe ``name`` for PIL images (``tensor=False``) or uint8 tensors."""
    r = get_recipe(name)
    small = image_size < SMALL_IMAGE_LIMIT
    mean, std = normalisation(channels)
    body: list[Callable[..., Any]] = []
    if r.crop_scale is not None:
        body.append(T.RandomResizedCrop(image_size, scale=r.crop_scale, ratio=r.crop_ratio))
    elif r.pad_crop > 0:
        # CIFAR's crop of a 32-px image; another input size is resized to image_size first
        size = (image_size, image_size)
        body += [T.Resize(size), T.RandomCrop(image_size, padding=r.pad_crop)]
    elif name == "eval" and not small:
        body += [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:
        body.append(T.Resize((image_size, image_size)))
    n_geometry = len(body)
    if r.has_jitter:
        sat, hue = (r.saturation, r.hue) if channels == 3 else (0.0, 0.0)
        jitter = T.ColorJitter(r.brightness, r.contrast, sat, hue)
        body.append(jitter if r.jitter_p >= 1.0 else T.RandomApply([jitter], p=r.jitter_p))
    if channels == 3 and r.grayscale_p > 0:
        body.append(T.RandomGrayscale(p=r.grayscale_p))
    if r.blur_sigma is not None and r.blur_p > 0 and not small:
        kernel = 2 * (image_size // 20) + 1  # 23 at 224 px, about 10% of the side
        blur: Callable[..., Any] = SeparableGaussianBlur(kernel, r.blur_sigma)  # PIL or tensor
        body.append(T.RandomApply([blur], p=r.blur_p))
    if r.flip_p > 0:
        body.append(T.RandomHorizontalFlip(p=r.flip_p))
    if r.autoaugment is not None:
        if r.autoaugment != "cifar10":
            raise ConfigError(f"recipe {name!r}: autoaugment={r.autoaugment!r} must be 'cifar10'")
        policy = T.AutoAugmentPolicy.CIFAR10
        body.append(T.AutoAugment(policy, fill=[128.0] * channels))
    if r.randaugment is not None:
        fill = tuple(min(255, round(255 * m)) for m in mean)
        body.append(RandAugment.from_config(r.randaugment, fill=fill))
    after: list[Callable[..., Any]] = [Cutout(r.cutout)] if r.cutout > 0 else []
    if tensor and r.host_only:
        # RandAugment's / AutoAugment's posterize, equalize, solarize need uint8: the whole body
        # runs on uint8 (torchvision's jitter, grayscale and blur accept it), then to float
        return T.Compose(
            [TensorChannels(channels), *body, T.ConvertImageDtype(torch.float32), *after,
             T.Normalize(mean, std)]
        )  # fmt: skip
    if tensor:
        # uint8 crop/resize (antialiased by default, as PIL's), then float for the colour ops
        geometry, rest = body[:n_geometry], body[n_geometry:]
        to_float = T.ConvertImageDtype(torch.float32)
        return T.Compose(
            [TensorChannels(channels), *geometry, to_float, *rest, T.Normalize(mean, std)]
        )
    head = ConvertMode("L" if channels == 1 else "RGB")
    return T.Compose([head, *body, T.ToTensor(), *after, T.Normalize(mean, std)])
