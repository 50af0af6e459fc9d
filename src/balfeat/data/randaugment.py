"""RandAugment as the PaCo / GPaCo / BCL training scripts configure it (``rand-n2-m10-mstd0.5``).

RandAugment (Cubuk et al., https://arxiv.org/abs/1909.13719) applies ``n`` operations drawn at
random, each at a global magnitude ``m``. The long-tail papers that use it (PaCo, GPaCo, BCL)
take the variant of Ross Wightman's timm ``rand_augment_transform`` (copied into their
repositories as ``randaugment.py``), configured by a string such as ``"rand-n2-m10-mstd0.5"``.
:class:`RandAugment` is written here from that behaviour:

- 15 operations, drawn uniformly *with replacement*: AutoContrast, Equalize, Invert, Rotate,
  Posterize (TPU form: keep ``int(4 m / 10)`` bits), Solarize (threshold ``int(256 m / 10)``),
  SolarizeAdd (add ``int(110 m / 10)`` to pixels below 128), Color, Contrast, Brightness,
  Sharpness (factor ``0.1 + 1.8 m / 10``, so at m = 10 always *1.9*), ShearX/ShearY (``±0.3 m /
  10``, about the top-left corner), TranslateX/TranslateY (``±0.45 m / 10`` of the side), Rotate
  (``±30 m / 10`` degrees); the signs of the geometric ops are random.
- each drawn operation is applied with probability 0.5 (so with n = 2 an image gets 0, 1 or 2);
- the magnitude of each application is ``N(m, mstd)`` clipped to ``[0, 10]`` (``mstd0.5``);
- geometric ops fill with the ImageNet mean ``(124, 116, 104)`` and interpolate bilinearly or
  bicubically at random (PIL images; uint8 tensors: bilinear only, torchvision's tensor affine has
  no bicubic).

How this differs from ``torchvision.transforms.RandAugment(num_ops=2, magnitude=10)``: torchvision
applies every drawn op (no probability 0.5), uses a fixed magnitude (no noise) on a 31-bin scale
(so its magnitude 10 is a third of the maximum: 10 degrees, shear 0.1, enhance factor 1 ± 0.3 with
a random sign), draws from 14 ops that include Identity but not Invert or SolarizeAdd, and
posterizes/solarizes on other scales. The randomness here comes from the global torch RNG (as every
torchvision transform), so ``torch.manual_seed`` and the DataLoader's per-worker seeds make it
reproducible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from balfeat.errors import ConfigError

#: The top of the magnitude scale (timm's ``_MAX_LEVEL``).
MAX_LEVEL = 10.0
#: The operations, in the order of the authors' list (index = the draw).
RANDAUGMENT_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
)  # fmt: skip
_GEOMETRIC = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed RandAugment configuration string.

    Attributes:
        num_ops: ``n``, operations drawn per image.
        magnitude: ``m`` in ``[0, 10]``.
        magnitude_std: ``mstd``, the std of the Gaussian noise on the magnitude (0: none).
    """

    num_ops: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 0.0


def parse_randaugment(config: str) -> RandAugmentSpec:
    """Parse ``"rand-n2-m10-mstd0.5"`` (sections in any order; defaults n 2, m 10, mstd 0).

    Raises:
        ConfigError: not starting with ``rand``, an unknown section, or a value out of range.
    """
    parts = config.split("-")
    if parts[0] != "rand":
        raise ConfigError(
            f"RandAugment config {config!r} must start with 'rand' (e.g. 'rand-n2-m10-mstd0.5')"
        )
    values: dict[str, float] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|n|m)(\d+(?:\.\d+)?)", part)
        if match is None:
            raise ConfigError(
                f"RandAugment config {config!r}: section {part!r} is not n<int>, m<number> or "
                "mstd<number>"
            )
        values[match.group(1)] = float(match.group(2))
    spec = RandAugmentSpec(
        num_ops=int(values.get("n", 2)),
        magnitude=values.get("m", MAX_LEVEL),
        magnitude_std=values.get("mstd", 0.0),
    )
    if spec.num_ops < 1 or not 0.0 <= spec.magnitude <= MAX_LEVEL:
        raise ConfigError(f"RandAugment config {config!r}: need n >= 1 and 0 <= m <= {MAX_LEVEL}")
    return spec


class RandAugment:
    """The authors' RandAugment (see the module docstring) for PIL images and uint8 tensors.

    Args:
        num_ops: operations drawn per image (with replacement).
        magnitude: ``m`` in ``[0, 10]``.
        magnitude_std: std of the per-application magnitude noise (0: fixed magnitude).
        prob: probability that a drawn operation is applied (the authors: 0.5).
        fill: fill value of the geometric ops per channel, 0-255 (the first value for gray).
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 10.0,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        fill: tuple[int, ...] = (124, 116, 104),
    ) -> None:
        if num_ops < 1 or not 0.0 <= magnitude <= MAX_LEVEL or magnitude_std < 0:
            raise ConfigError(
                f"RandAugment(num_ops={num_ops}, magnitude={magnitude}, "
                f"magnitude_std={magnitude_std}) needs num_ops >= 1, 0 <= magnitude <= 10, "
                "magnitude_std >= 0"
            )
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"RandAugment prob={prob} must be in [0, 1]")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.prob = prob
        self.fill = fill

    @classmethod
    def from_config(cls, config: str, fill: tuple[int, ...] = (124, 116, 104)) -> RandAugment:
        """The transform of a config string such as ``"rand-n2-m10-mstd0.5"``."""
        spec = parse_randaugment(config)
        return cls(spec.num_ops, spec.magnitude, spec.magnitude_std, fill=fill)

    def __call__(self, img: Any) -> Any:
        """PIL image or uint8 tensor Shape: (C, H, W) -> the same type, size and mode."""
        if isinstance(img, torch.Tensor) and img.dtype != torch.uint8:
            raise ConfigError(
                f"RandAugment needs PIL images or uint8 tensors, got a {img.dtype} tensor "
                "(run it before ConvertImageDtype / ToTensor)"
            )
        picks = torch.randint(len(RANDAUGMENT_OPS), (self.num_ops,)).tolist()
        for idx in picks:
            if torch.rand(()).item() >= self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std > 0:
                m = m + self.magnitude_std * torch.randn(()).item()
            img = self.apply(img, RANDAUGMENT_OPS[idx], min(MAX_LEVEL, max(0.0, m)))
        return img

    def apply(self, img: Any, op: str, level: float) -> Any:
        """Apply operation ``op`` at magnitude ``level`` (0-10), with the random sign / resample
        draws of the geometric ops."""
        frac = level / MAX_LEVEL
        if op in _GEOMETRIC:
            return self._geometric(img, op, frac)
        if op == "AutoContrast":
            return F.autocontrast(img)
        if op == "Equalize":
            return F.equalize(img)
        if op == "Invert":
            return F.invert(img)
        if op == "Posterize":
            return _posterize(img, int(frac * 4))
        if op == "Solarize":
            return _solarize(img, int(frac * 256))
        if op == "SolarizeAdd":
            return _solarize_add(img, int(frac * 110))
        factor = 0.1 + 1.8 * frac
        if op == "Color":
            return F.adjust_saturation(img, factor)
        if op == "Contrast":
            return F.adjust_contrast(img, factor)
        if op == "Brightness":
            return F.adjust_brightness(img, factor)
        if op == "Sharpness":
            return F.adjust_sharpness(img, factor)
        raise ConfigError(f"unknown RandAugment op {op!r}; use one of {', '.join(RANDAUGMENT_OPS)}")

    def _geometric(self, img: Any, op: str, frac: float) -> Any:
        sign = -1.0 if torch.rand(()).item() > 0.5 else 1.0
        tensor = isinstance(img, torch.Tensor)
        bicubic = not tensor and torch.rand(()).item() < 0.5
        mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
        channels = img.shape[0] if tensor else len(img.getbands())
        fill = [float(v) for v in self.fill[:channels]]
        width, height = (img.shape[-1], img.shape[-2]) if tensor else img.size
        angle, shear, shift = 0.0, [0.0, 0.0], [0.0, 0.0]
        if op == "Rotate":
            return F.rotate(img, sign * 30.0 * frac, interpolation=mode, fill=fill)
        if op in ("ShearX", "ShearY"):
            degrees = math.degrees(math.atan(sign * 0.3 * frac))
            shear = [degrees, 0.0] if op == "ShearX" else [0.0, degrees]
        else:
            side = width if op == "TranslateX" else height
            pixels = sign * 0.45 * frac * side  # sub-pixel shifts interpolate, as PIL's
            shift = [pixels, 0.0] if op == "TranslateX" else [0.0, pixels]
        # about the top-left corner, as PIL's Image.transform(AFFINE) in the authors' code
        return F.affine(
            img, angle=angle, translate=shift, scale=1.0, shear=shear, interpolation=mode,
            fill=fill, center=[0, 0],
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"magnitude_std={self.magnitude_std}, prob={self.prob})"
        )


def _posterize(img: Any, bits: int) -> Any:
    if bits >= 8:
        return img
    if bits <= 0:
        return torch.zeros_like(img) if isinstance(img, torch.Tensor) else img.point(lambda _: 0)
    return F.posterize(img, bits)


def _solarize(img: Any, threshold: int) -> Any:
    # pixels >= threshold are inverted; 256 (m = 10) leaves the image as it is
    return img if threshold > 255 else F.solarize(img, float(threshold))


def _solarize_add(img: Any, add: int) -> Any:
    """Add ``add`` to the pixels below 128 (clipped at 255), leave the others."""
    if isinstance(img, torch.Tensor):
        raised = (img.to(torch.int16) + add).clamp(max=255).to(torch.uint8)
        return torch.where(img < 128, raised, img)
    lut = [min(255, v + add) if v < 128 else v for v in range(256)]
    if not isinstance(img, Image.Image) or img.mode not in ("L", "RGB"):
        return img
    return img.point(lut * len(img.getbands()))
