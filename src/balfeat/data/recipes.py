"""The augmentation recipes, declared once as data and read by both input paths.

:func:`balfeat.data.transforms.build_transform` (PIL, per image) and
:meth:`balfeat.data.device_data.DeviceAugment.from_recipe` (batched tensor ops on the device) both
build their pipelines from :data:`RECIPES`, so a recipe's crop, flip, jitter, grayscale, blur and
normalisation are written in one place.

Recipes (papers cited in :mod:`balfeat.data.transforms`): ``moco_v1``, ``moco_v2``,
``supervised``, ``longtail``, ``eval`` (resize/centre crop + normalise) and ``none`` (normalise
only, no resize of small images beyond the output size); the views of the PaCo / GPaCo / BCL
training scripts: ``randcls``, ``randclsstack`` (with RandAugment), ``paco_sim``, ``bcl_sim``,
``cifar_autoaug_cutout`` (PaCo's CIFAR query view: padded crop, AutoAugment, Cutout).

Two-view names (:data:`VIEW_PAIRS`) give a different recipe to each view (query / key):
``paco_randcls_sim``, ``gpaco_randcls_randclsstack``, ``bcl_randcls_sim``,
``paco_cifar_autoaug_sim``. Recipes with RandAugment, AutoAugment, Cutout or the padded crop run
on the host only (PIL images or uint8 tensors): they are not in
:data:`DEVICE_RECIPE_NAMES`, and :func:`get_device_recipe` refuses them.
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
        randaugment: a RandAugment config string (``"rand-n2-m10-mstd0.5"``, read by
            :func:`balfeat.data.randaugment.parse_randaugment`), applied last, or ``None``.
        pad_crop: with ``crop_scale`` ``None``: RandomCrop(image_size, padding=pad_crop) (the
            CIFAR crop), 0 for none.
        autoaugment: ``"cifar10"`` for torchvision's AutoAugment CIFAR-10 policy (grey fill 128,
            as the authors' ``CIFAR10Policy``), applied after the flip, or ``None``.
        cutout: side of one zeroed square (Cutout, DeVries & Taylor 2017) on the [0, 1] tensor
            before normalisation, 0 for none.
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
    randaugment: str | None = None
    pad_crop: int = 0
    autoaugment: str | None = None
    cutout: int = 0

    @property
    def host_only(self) -> bool:
        """Whether the recipe has an op the on-device paths lack (RandAugment, AutoAugment,
        Cutout, the padded crop)."""
        return (
            self.randaugment is not None
            or self.autoaugment is not None
            or self.cutout > 0
            or self.pad_crop > 0
        )

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
    # The views of PaCo / GPaCo (github:dvlab-research/Parametric-Contrastive-Learning
    # PaCo/LT/paco_lt.py:317-373, GPaCo/LT/paco_lt.py:317-354) and BCL
    # (github:FlamieZhu/Balanced-Contrastive-Learning main.py:148-181). Their op order (crop,
    # flip, jitter, ...) differs from ours only by where the flip sits, which commutes with
    # the colour ops and the blur, and leaves RandAugment's distribution as it is (its
    # geometric ops draw a random sign).
    # augmentation_randncls (PaCo's query view, BCL's classifier view: the same list)
    "randcls": Recipe(
        crop_scale=(0.08, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        randaugment="rand-n2-m10-mstd0.5",
    ),
    # augmentation_randnclsstack (GPaCo's second view)
    "randclsstack": Recipe(
        crop_scale=(0.08, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        grayscale_p=0.2, blur_sigma=(0.1, 2.0), blur_p=0.5, randaugment="rand-n2-m10-mstd0.5",
    ),
    # augmentation_sim (PaCo's key view): jitter with p 1 and no hue, unlike moco_v2
    "paco_sim": Recipe(
        crop_scale=(0.08, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        grayscale_p=0.2, blur_sigma=(0.1, 2.0), blur_p=0.5,
    ),
    # BCL's augmentation_sim (its two contrastive views): no blur, jitter p 0.8 with hue 0.1
    "bcl_sim": Recipe(
        crop_scale=(0.08, 1.0), flip_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.1, jitter_p=0.8, grayscale_p=0.2,
    ),
    # PaCo's CIFAR query view (PaCo/LT/paco_cifar.py:312-320, augmentation_regular):
    # RandomCrop(32, padding 4), flip, AutoAugment CIFAR10Policy, ToTensor, Cutout(1 hole, 16)
    "cifar_autoaug_cutout": Recipe(pad_crop=4, flip_p=0.5, autoaugment="cifar10", cutout=16),
}  # fmt: skip

RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
#: The recipes the on-device paths (DeviceAugment, EncodedBatchAugment) can run.
DEVICE_RECIPE_NAMES: tuple[str, ...] = tuple(n for n, r in RECIPES.items() if not r.host_only)

#: Two-view augmentations: name -> (view-1 recipe, view-2 recipe). View 1 is the query (PaCo),
#: the first anchor view (GPaCo) or the view the classifier sees (BCL). A one-view method given
#: such a name uses view 1.
VIEW_PAIRS: dict[str, tuple[str, str]] = {
    # PaCo/LT/sh/ImageNetLT_train_R50.sh, Inat_train_R50.sh: --aug randcls_sim
    # (GPaCo/LT/sh/LT/Inat_train_R50.sh too)
    "paco_randcls_sim": ("randcls", "paco_sim"),
    # GPaCo/LT/sh/LT/ImageNetLT_train_R50.sh: --aug randcls_randclsstack
    "gpaco_randcls_randclsstack": ("randcls", "randclsstack"),
    # BCL main.py --cl_views sim-sim: [randncls (CE), sim, sim]; two views here: [randcls, sim]
    "bcl_randcls_sim": ("randcls", "bcl_sim"),
    # PaCo/LT/sh/CIFAR100_train_imb*.sh: --aug cifar100 = [augmentation_regular,
    # augmentation_sim_cifar]; the latter is moco_v2 (RRC 0.2-1, jitter 0.4/0.4/0.4/0.1 p 0.8,
    # grayscale 0.2, blur p 0.5: balfeat leaves the blur out below 64 px)
    "paco_cifar_autoaug_sim": ("cifar_autoaug_cutout", "moco_v2"),
}
#: Every name ``data.augmentation`` accepts.
AUGMENTATION_NAMES: tuple[str, ...] = RECIPE_NAMES + tuple(VIEW_PAIRS)


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


def view_recipes(name: str) -> tuple[str, str]:
    """The (view-1, view-2) recipe names of augmentation ``name``: a :data:`VIEW_PAIRS` entry,
    or ``(name, name)`` for a one-recipe name.

    Raises:
        ConfigError: unknown name (the message lists every augmentation name).
    """
    if name in VIEW_PAIRS:
        return VIEW_PAIRS[name]
    if name in RECIPES:
        return name, name
    raise ConfigError(f"unknown augmentation {name!r}; use one of {', '.join(AUGMENTATION_NAMES)}")


def view_set(name: str, views: int) -> tuple[str, ...]:
    """The recipe of each of ``views`` crops of augmentation ``name``.

    A one-recipe name gives every crop that recipe. A multi-view name gives its recipes in order:
    a method with fewer views takes the first ones, one with more repeats the last. So BCL's
    three crops (github:FlamieZhu/Balanced-Contrastive-Learning ``main.py``, ``TwoCropTransform``:
    one RandAugment crop for the classifier, two SimCLR-like crops for the contrastive term) are
    ``view_set("bcl_randcls_sim", 3) == ("randcls", "bcl_sim", "bcl_sim")``.

    Raises:
        ConfigError: unknown name, or ``views`` < 1.
    """
    if views < 1:
        raise ConfigError(f"views={views} must be >= 1")
    recipes = VIEW_PAIRS.get(name) or view_recipes(name)[:1]
    return tuple(recipes[min(i, len(recipes) - 1)] for i in range(views))


def host_only(name: str) -> bool:
    """Whether augmentation ``name`` (a recipe or a two-view name) needs the host (PIL or uint8
    tensor) path, i.e. one of its views has RandAugment, AutoAugment, Cutout or a padded crop."""
    return any(get_recipe(v).host_only for v in view_recipes(name))


def get_device_recipe(name: str, where: str = "the on-device augmentation") -> Recipe:
    """:func:`get_recipe` for the on-device paths: refuses a recipe they cannot run.

    Raises:
        ConfigError: unknown name, or a host-only recipe (named, with what to do).
    """
    r = get_recipe(name)
    if r.host_only:
        raise ConfigError(
            f"augmentation recipe {name!r} uses RandAugment / AutoAugment / Cutout / a padded "
            f"crop, which {where} does not have; "
            "use data.loader=pil (or auto) and data.decode=pil or cpu"
        )
    return r


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: ImageNet statistics for RGB, Fashion-MNIST's for gray."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
