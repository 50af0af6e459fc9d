"""Small-image datasets resident on the device, augmented per sample with batched torch ops.

For MNIST / Fashion-MNIST / CIFAR-sized images the PIL pipeline of :mod:`balfeat.data.transforms`
(one PIL image and a dozen Python calls per sample, per view) costs more than the forward pass of
a small ResNet. :class:`DeviceArrayLoader` keeps the uint8 array on the device (GPU when present,
CPU otherwise) and :class:`DeviceAugment` draws every sample's parameters at once and applies them
to the whole batch:

- RandomResizedCrop + horizontal flip as one per-sample affine map (``affine_grid`` +
  ``grid_sample``, bilinear), with scale/ratio/offset sampled as torchvision does (10 tries per
  sample, full image as the fallback);
- colour jitter with probability ``jitter_p`` (brightness, contrast, saturation and hue for RGB;
  brightness and contrast for grayscale) with torchvision's formulas, applied in the fixed order
  brightness, contrast, saturation, hue (torchvision shuffles the order per image);
- RandomGrayscale (RGB only) and normalisation.

Differences from the PIL recipes, by design: no Gaussian blur (the small-image recipes drop it
too), no antialiasing when a crop is shrunk, and the fallback crop is the whole image. Every random
parameter is drawn on the CPU from a ``torch.Generator`` seeded by ``(seed, epoch, batch)``, so a
run gives the same batches on CPU and GPU and is reproducible per ``set_epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from balfeat.data.recipes import (
    DEVICE_RECIPE_NAMES,
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    get_device_recipe,
)
from balfeat.data.samplers import ShardedSampler
from balfeat.data.tensor_ops import to_float_nchw
from balfeat.device import default_device
from balfeat.errors import ConfigError, DataError
from balfeat.seeding import derive_seed

DEVICE_RECIPES: tuple[str, ...] = DEVICE_RECIPE_NAMES
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma (ITU-R 601-2, as PIL's ``convert("L")``)."""
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(factor * x + (1 - factor) * other, 0, 1)`` with factor Shape: (B,)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (torchvision's formulas)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_div
    gc = (maxc - g) / cr_div
    bc = (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB in [0, 1].

    The closed form ``c_n = v - v * s * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and ``n = 5, 3, 1`` for R, G, B (same values as torchvision's
    sector table, without materialising the six sectors).
    """
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h * 6.0, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


class DeviceAugment:
    """Per-sample image augmentation of a whole batch on its device.

    Args:
        image_size: output side in pixels.
        channels: 1 (grayscale) or 3 (RGB); the input must have the same number of channels.
        crop_scale: RandomResizedCrop area range, or ``None`` for no crop (the image is only
            resized to ``image_size`` if it differs).
        crop_ratio: RandomResizedCrop aspect-ratio range.
        flip_p: probability of a horizontal flip.
        brightness: jitter strength ``b``, factor drawn from ``[max(0, 1 - b), 1 + b]``.
        contrast: same for contrast.
        saturation: same for saturation (RGB only).
        hue: hue shift drawn from ``[-hue, hue]`` (RGB only, at most 0.5).
        jitter_p: probability that the colour jitter is applied to a sample.
        grayscale_p: probability of converting a sample to gray (RGB only).
        mean: normalisation mean per channel; default ImageNet (RGB) or Fashion-MNIST (gray).
        std: normalisation std per channel; default as ``mean``.

    Use :meth:`from_recipe` for the recipes of :func:`balfeat.data.transforms.build_transform`.
    """

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        crop_scale: tuple[float, float] | None = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_p: float = 0.5,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        jitter_p: float = 1.0,
        grayscale_p: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"DeviceAugment channels={channels} must be 1 (gray) or 3 (RGB)")
        if image_size < 1:
            raise ConfigError(f"DeviceAugment image_size={image_size} must be >= 1")
        if crop_scale is not None and not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ConfigError(
                f"DeviceAugment crop_scale={crop_scale} must satisfy 0 < lo <= hi <= 1"
            )
        if not 0.0 < crop_ratio[0] <= crop_ratio[1]:
            raise ConfigError(f"DeviceAugment crop_ratio={crop_ratio} must satisfy 0 < lo <= hi")
        if not 0.0 <= hue <= 0.5:
            raise ConfigError(f"DeviceAugment hue={hue} must be in [0, 0.5]")
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"DeviceAugment {name}={p} must be a probability in [0, 1]")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.flip_p = float(flip_p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation) if channels == 3 else 0.0
        self.hue = float(hue) if channels == 3 else 0.0
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p) if channels == 3 else 0.0
        default_mean, default_std = (
            (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
        )
        self.mean = tuple(float(m) for m in (mean if mean is not None else default_mean))
        self.std = tuple(float(s) for s in (std if std is not None else default_std))
        if len(self.mean) != channels or len(self.std) != channels:
            raise ConfigError(f"DeviceAugment mean/std need {channels} values each")

    @classmethod
    def from_recipe(
        cls, name: str, image_size: int, channels: int = 3, crop: bool = True
    ) -> DeviceAugment:
        """The small-image form of a :func:`~balfeat.data.transforms.build_transform` recipe.

        Args:
            name: a :data:`balfeat.data.recipes.RECIPES` name: ``"moco_v1"``, ``"moco_v2"``,
                ``"supervised"``, ``"longtail"``, ``"eval"`` or ``"none"`` (the last two: resize
                if needed + normalise). The Gaussian blur of ``moco_v2`` is not applied (small
                images, as the PIL path below 64 px).

            image_size: output side in pixels.
            channels: 1 or 3.
            crop: apply the recipe's random resized crop (``False``: the caller crops, as the
                encoded-batch path of :mod:`balfeat.data.decode` does per image).

        Raises:
            ConfigError: unknown recipe name.
        """
        r = get_device_recipe(name, "DeviceAugment (data.loader=device)")
        return cls(
            image_size,
            channels,
            r.crop_scale if crop else None,
            crop_ratio=r.crop_ratio,
            flip_p=r.flip_p,
            brightness=r.brightness,
            contrast=r.contrast,
            saturation=r.saturation,
            hue=r.hue,
            jitter_p=r.jitter_p,
            grayscale_p=r.grayscale_p,
        )

    def __repr__(self) -> str:
        return (
            f"DeviceAugment(image_size={self.image_size}, channels={self.channels}, "
            f"crop_scale={self.crop_scale}, flip_p={self.flip_p}, jitter=({self.brightness}, "
            f"{self.contrast}, {self.saturation}, {self.hue}) p={self.jitter_p}, "
            f"grayscale_p={self.grayscale_p})"
        )

    # -- parameters ---------------------------------------------------------------------------

    def _crop_boxes(
        self, n: int, height: int, width: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample crop ``(w_frac, h_frac, cx, cy)`` in normalised units. Shape: (n,) each.

        ``w_frac``/``h_frac`` are the crop's width/height as fractions of the image's and
        ``cx``/``cy`` its centre in ``[-1, 1]`` coordinates, as torchvision's RandomResizedCrop
        samples them: area fraction uniform in ``crop_scale``, log aspect ratio uniform in
        ``log(crop_ratio)``, 10 tries, then the whole image.
        """
        if self.crop_scale is None:
            one = torch.ones(n)
            return one, one, torch.zeros(n), torch.zeros(n)
        tries = 10
        lo, hi = self.crop_scale
        area = torch.empty(n, tries).uniform_(lo, hi, generator=gen)
        log_r = torch.empty(n, tries).uniform_(
            math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator=gen
        )
        ratio = torch.exp(log_r)
        # pixel sizes as torchvision rounds them
        w_px = torch.round(torch.sqrt(area * height * width * ratio))
        h_px = torch.round(torch.sqrt(area * height * width / ratio))
        ok = (w_px > 0) & (h_px > 0) & (w_px <= width) & (h_px <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
        rows = torch.arange(n)
        pick = first.clamp(min=0)
        w_sel = torch.where(first >= 0, w_px[rows, pick], torch.full((n,), float(width)))
        h_sel = torch.where(first >= 0, h_px[rows, pick], torch.full((n,), float(height)))
        u = torch.rand(n, 2, generator=gen)
        left = torch.floor(u[:, 0] * (width - w_sel + 1))
        top = torch.floor(u[:, 1] * (height - h_sel + 1))
        w_frac, h_frac = w_sel / width, h_sel / height
        cx = (2.0 * left + w_sel) / width - 1.0
        cy = (2.0 * top + h_sel) / height - 1.0
        return w_frac, h_frac, cx, cy

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Draw every sample's parameters on the CPU (so CPU and GPU runs agree).

        Returns:
            ``{"theta": (n, 2, 3) affine maps, "brightness", "contrast", "saturation", "hue",
            "gray": (n,) each}``; an identity factor is 1 (hue 0, gray False).
        """
        w_frac, h_frac, cx, cy = self._crop_boxes(n, height, width, generator)
        flip = torch.rand(n, generator=generator) < self.flip_p
        sx = torch.where(flip, -w_frac, w_frac)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = sx
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h_frac
        theta[:, 1, 2] = cy
        apply = torch.rand(n, generator=generator) < self.jitter_p

        def factor(strength: float) -> torch.Tensor:
            f = torch.empty(n).uniform_(
                max(0.0, 1.0 - strength), 1.0 + strength, generator=generator
            )
            return torch.where(apply, f, torch.ones(n))

        hue = torch.empty(n).uniform_(-self.hue, self.hue, generator=generator)
        gray = torch.rand(n, generator=generator) < self.grayscale_p
        return {
            "theta": theta,
            "flip": flip,
            "brightness": factor(self.brightness),
            "contrast": factor(self.contrast),
            "saturation": factor(self.saturation),
            "hue": torch.where(apply, hue, torch.zeros(n)),
            "gray": gray,
        }

    # -- application --------------------------------------------------------------------------

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: uint8 Shape: (B, H, W) or (B, H, W, C) (channels last, as stored), or float
                in [0, 1] Shape: (B, C, H, W). On any device; the output is on the same one.
            generator: CPU generator the parameters are drawn from; default a fresh unseeded one.
            part: ``(index, parts)``: ``images`` are rows ``[index * B, (index + 1) * B)`` of a
                batch of ``parts * B`` (one rank's slice of the global batch). The parameters of
                all ``parts * B`` rows are drawn and this slice's are used, so each image gets
                the draws it gets when the whole batch is augmented at once.

        Returns:
            Normalised float32 images. Shape: (B, channels, image_size, image_size).
        """
        x = to_float_nchw(images)
        if x.shape[1] != self.channels:
            raise DataError(
                f"DeviceAugment(channels={self.channels}) got images with {x.shape[1]} channels; "
                "build it with the images' number of channels"
            )
        n, _, height, width = x.shape
        gen = (
            generator
            if generator is not None
            else torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        )
        index, parts = part
        drawn = self.sample_params(n * parts, height, width, gen)
        p = {k: v[index * n : (index + 1) * n].to(x.device, non_blocking=True)
             for k, v in drawn.items()}  # fmt: skip
        size = self.image_size
        if self.crop_scale is not None or self.flip_p > 0.0:
            grid = F.affine_grid(p["theta"], [n, self.channels, size, size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        elif (height, width) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)  # fmt: skip
        x = self._jitter(x, p)
        if self.grayscale_p > 0.0:
            g = p["gray"].view(-1, 1, 1, 1)
            x = torch.where(g, _gray(x).expand_as(x), x)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def _jitter(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Brightness, contrast, saturation, hue with torchvision's formulas. x in [0, 1]."""
        if self.brightness > 0.0:
            x = (x * p["brightness"].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
        if self.contrast > 0.0:
            lum = x if self.channels == 1 else _gray(x)
            mean = lum.mean(dim=(1, 2, 3), keepdim=True)
            x = _blend(x, mean, p["contrast"])
        if self.saturation > 0.0:
            x = _blend(x, _gray(x), p["saturation"])
        if self.hue > 0.0:
            hsv = _rgb_to_hsv(x)
            h = torch.remainder(hsv[:, 0] + p["hue"].view(-1, 1, 1), 1.0)
            x = _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))
        return x


class DeviceArrayLoader:
    """Batches of an in-memory uint8 image array, augmented on the device.

    Iterating gives ``(images, labels)`` with images float Shape: (B, C, S, S) (``views=1``) or a
    list of ``views`` such tensors (e.g. ``[view_q, view_k]``, independent augmentations of the
    same images), and labels int64 Shape: (B,), all on ``device``.

    Args:
        images: uint8 Shape: (N, H, W) or (N, H, W, C), numpy or torch.
        labels: integer labels. Shape: (N,).
        batch_size: images per batch.
        sampler: index order: a sampler with ``set_epoch`` (e.g.
            :class:`~balfeat.data.samplers.ClassBalancedSampler`), any iterable of indices, or
            ``None`` for a :class:`~balfeat.data.samplers.ShardedSampler` (sharded across ranks,
            shuffled with ``seed`` when ``shuffle``).
        transform: a :class:`DeviceAugment` (every view), one per view, or ``None`` (the images
            in [0, 1] unnormalised).
        views: crops per image: 1 (supervised), 2 (MoCo/KCL query and key), or more.
        device: where the batches are made; default :func:`balfeat.device.default_device`.
        seed: base seed of the shuffle and augmentation; batches depend on ``(seed, epoch)``.
        shuffle: shuffle when ``sampler`` is ``None``.
        drop_last: drop a last incomplete batch.
        resident: keep the whole array on ``device`` (copied once). With ``False`` and a CUDA
            device the array stays in pinned CPU memory and each batch is copied with
            ``non_blocking=True`` (for arrays bigger than the GPU can spare).
        start_batch: skip the first batches of the epoch (mid-epoch resume); batch ``b`` keeps
            the augmentation of ``(seed, epoch, b)``, so the rest of the epoch is unchanged.
        part: ``(rank, ranks)``: the batches are this rank's slices of global batches of
            ``ranks * batch_size``, and ``seed`` is the global batch's: each image is augmented
            with the draws of its row in the global batch (:meth:`DeviceAugment.__call__`).
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        sampler: Iterable[int] | None = None,
        transform: DeviceAugment | Sequence[DeviceAugment] | None = None,
        views: int = 1,
        device: torch.device | str | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        resident: bool = True,
        start_batch: int = 0,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ConfigError(f"DeviceArrayLoader views={views!r} must be an integer >= 1")
        per_view: list[DeviceAugment | None] = (
            list(transform) if isinstance(transform, Sequence) else [transform] * views
        )
        if len(per_view) != views:
            raise ConfigError(
                f"DeviceArrayLoader got {len(per_view)} transforms for views={views}; give one "
                "transform, or one per view"
            )
        if batch_size < 1:
            raise ConfigError(f"DeviceArrayLoader batch_size={batch_size} must be >= 1")
        data = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
        if data.dtype != torch.uint8 or data.ndim not in (3, 4):
            raise DataError(
                f"DeviceArrayLoader wants uint8 images (N,H,W) or (N,H,W,C), got {data.dtype} "
                f"{tuple(data.shape)}"
            )
        if data.ndim == 3:
            data = data.unsqueeze(-1)
        targets = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if len(targets) != len(data):
            raise DataError(f"DeviceArrayLoader: {len(data)} images but {len(targets)} labels")
        self.device = torch.device(device) if device is not None else default_device()
        cuda = self.device.type == "cuda"
        if cuda and data.device.type == "cpu":
            data = data.contiguous().pin_memory()
            targets = targets.pin_memory()
        self.resident = resident or not cuda
        if self.resident:
            data = data.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
        self.images = data
        self.labels = targets
        self.targets = targets.cpu().numpy()
        self.num_classes = int(self.targets.max()) + 1 if len(self.targets) else 0
        self.batch_size = int(batch_size)
        self.sampler: Iterable[int] = (
            sampler
            if sampler is not None
            else ShardedSampler(len(data), shuffle=shuffle, seed=seed)
        )
        self.transform = transform
        self.view_transforms = per_view
        self.views = views
        self.seed = int(seed)
        self.drop_last = drop_last
        self.start_batch = int(start_batch)
        self.part = part
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order and augmentations of ``epoch`` (forwarded to the sampler)."""
        self.epoch = int(epoch)
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)

    def _num_indices(self) -> int:
        try:
            return len(self.sampler)  # type: ignore[arg-type]
        except TypeError:
            return len(list(self.sampler))

    def __len__(self) -> int:
        n = self._num_indices()
        full = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return max(0, full - self.start_batch)

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:
            i = idx.to(self.images.device, non_blocking=True)
            return self.images[i], self.labels[i]
        x = self.images[idx].pin_memory()
        y = self.labels[idx].pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        order = torch.as_tensor(np.fromiter(iter(self.sampler), dtype=np.int64))
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for b, start in enumerate(range(0, stop, self.batch_size)):
            if b < self.start_batch:
                continue
            x, y = self._gather(order[start : start + self.batch_size])
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, b))
            views = [self._view(x, t, gen) for t in self.view_transforms]
            yield (views[0] if self.views == 1 else views), y

    def _view(
        self, x: torch.Tensor, transform: DeviceAugment | None, gen: torch.Generator
    ) -> torch.Tensor:
        if transform is None:
            return to_float_nchw(x)
        return transform(x, gen, self.part)
