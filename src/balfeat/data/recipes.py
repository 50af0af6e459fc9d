"""The augmentation recipes, declared once as data and read by both input paths.

:func:`balfeat.data.transforms.build_transform` (PIL, per image) and
:meth:`balfeat.data.device_data.DeviceAugment.from_recipe` (batched tensor ops on the device) both
build their pipelines from :data:`RECIPES`, so a recipe's crop, flip, jitter, grayscale, blur and
normalisation are written in one place.

Recipes (papers cited in :mod:`balfeat.data.transforms`): ``moco_v1``, ``moco_v2``,
``supervised``, ``longtail``, ``eval`` (resize/centre crop + normalise) and ``none`` (normalise
only, no resize of small images beyond the output size).
"""

from __future__ import annotations

from dataclasses import dataclass

from balfeat.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.2860,)
GRAY_STD = (0.3530,)
#: Below this side (pixels) a recipe is in its small-image form (no Gaussian blur).
SMALL_IMAGE_LIMIT = 64


@dataclass(frozen=True)
class Recipe:
    """One augmentation recipe as data.

    Attributes:
        crop_scale: RandomResizedCrop area range, or ``None`` for no random crop.
        crop_ratio: RandomResizedCrop aspect-ratio range.
        flip_p: horizontal-flip probability.
        brightness: colour-jitter strength (factor in ``[max(0, 1 - b), 1 + b]``).
        contrast: same for contrast.
        saturation: same for saturation (RGB only).
        hue: hue shift range ``[-hue, hue]`` (RGB only).
        jitter_p: probability that the colour jitter is applied.
        grayscale_p: RandomGrayscale probability (RGB only).
        blur_sigma: Gaussian-blur sigma range, or ``None`` for no blur (large images only).
        blur_p: probability of the blur.
    """

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    jitter_p: float = 1.0
    grayscale_p: float = 0.0
    blur_sigma: tuple[float, float] | None = None
    blur_p: float = 0.0

    @property
    def has_jitter(self) -> bool:
        """Whether any colour-jitter strength is non-zero."""
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))


RECIPES: dict[str, Recipe] = {
    # MoCo v1 (He et al., 2020)
    "moco_v1": Recipe(
        crop_scale=(0.2, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.4, grayscale_p=0.2,
    ),
    # MoCo v2 "aug-plus" (Chen et al., 2020)
    "moco_v2": Recipe(
        crop_scale=(0.2, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.1, jitter_p=0.8, grayscale_p=0.2, blur_sigma=(0.1, 2.0), blur_p=0.5,
    ),
    "supervised": Recipe(crop_scale=(0.08, 1.0), flip_p=0.5),
    "longtail": Recipe(
        crop_scale=(0.08, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4
    ),
    "eval": Recipe(),
    "none": Recipe(),
}  # fmt: skip

RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown augmentation recipe {name!r}; use one of {', '.join(RECIPE_NAMES)}"
        ) from None


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: ImageNet statistics for RGB, Fashion-MNIST's for gray."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
