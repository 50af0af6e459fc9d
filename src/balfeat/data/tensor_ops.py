"""Tensor operations shared by the image pipelines (a leaf: it imports no other data module).

The PIL/tensor recipes (:mod:`balfeat.data.transforms`), the encoded-batch path
(:mod:`balfeat.data.decode`) and the on-device loader (:mod:`balfeat.data.device_data`) all use
these, so none of them needs another for its arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from balfeat.errors import DataError


class TensorChannels:
    """Give a uint8 image tensor ``channels`` channels (the tensor form of :class:`ConvertMode`).

    RGB -> gray uses ITU-R 601-2 luma (as PIL's ``convert("L")``); gray -> RGB repeats the
    channel; an RGBA input keeps its first three channels.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Shape: (C, H, W) -> (channels, H, W)."""
        from torchvision.transforms import functional as TF

        if img.ndim == 2:
            img = img.unsqueeze(0)
        if img.shape[0] == 4:
            img = img[:3]
        if img.shape[0] == self.channels:
            return img
        if self.channels == 1:
            return TF.rgb_to_grayscale(img, num_output_channels=1)
        return img.expand(3, -1, -1).contiguous()

    def __repr__(self) -> str:
        return f"TensorChannels({self.channels})"


def crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """RandomResizedCrop boxes for images of different sizes, drawn as torchvision draws them.

    Per image: up to 10 tries of area fraction ~ U(scale) and log aspect ~ U(log ratio), pixel
    sides rounded, the first that fits is placed uniformly; if none fits, the centre crop with the
    aspect clamped to ``ratio`` (torchvision's fallback).

    Args:
        heights: image heights, int64 Shape: (B,).
        widths: image widths, int64 Shape: (B,).
        scale: area-fraction range.
        ratio: aspect-ratio (width / height) range.
        generator: the CPU generator every draw comes from.

    Returns:
        int64 Shape: (B, 4): ``(top, left, height, width)`` of each crop in pixels.
    """
    n, tries = len(heights), 10
    h, w = heights.double().view(-1, 1), widths.double().view(-1, 1)
    area = torch.empty(n, tries, dtype=torch.float64).uniform_(*scale, generator=generator) * h * w
    log_r = torch.empty(n, tries, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    r = torch.exp(log_r)
    cw = torch.round(torch.sqrt(area * r))
    ch = torch.round(torch.sqrt(area / r))
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = ok.double().argmax(1)
    rows = torch.arange(n)
    found = ok.any(1)
    # fallback: the centre crop of the largest box with the aspect clamped into ``ratio``
    in_ratio = (w / h).view(-1)
    fw = torch.where(in_ratio < ratio[0], w.view(-1), torch.where(
        in_ratio > ratio[1], torch.round(h.view(-1) * ratio[1]), w.view(-1)))  # fmt: skip
    fh = torch.where(in_ratio < ratio[0], torch.round(w.view(-1) / ratio[0]), h.view(-1))
    sel_w = torch.where(found, cw[rows, first], fw)
    sel_h = torch.where(found, ch[rows, first], fh)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(found, torch.floor(u[:, 0] * (h.view(-1) - sel_h + 1)),
                      torch.floor((h.view(-1) - sel_h) / 2))  # fmt: skip
    left = torch.where(found, torch.floor(u[:, 1] * (w.view(-1) - sel_w + 1)),
                       torch.floor((w.view(-1) - sel_w) / 2))  # fmt: skip
    return torch.stack((top, left, sel_h, sel_w), dim=1).long()


def gaussian_blur_batch(
    x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, kernel_size: int
) -> torch.Tensor:
    """Gaussian blur with a sigma per sample (torchvision's kernel and reflect padding).

    Args:
        x: float Shape: (B, C, H, W).
        sigma: Shape: (B,), > 0.
        apply: bool Shape: (B,); samples with ``False`` are returned unchanged.
        kernel_size: odd side of the (separable) kernel.

    Returns:
        Shape: (B, C, H, W).
    """
    if not bool(apply.any()):
        return x
    b, c, height, width = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    s = sigma.to(device=x.device, dtype=x.dtype).view(-1, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, k)
    k = k.repeat_interleave(c, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    y = x.reshape(1, b * c, height, width)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    y = y.view(b, c, height, width)
    return torch.where(apply.to(x.device).view(-1, 1, 1, 1), y, x)


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) / (B, H, W, C), or float (B, C, H, W) -> float32 (B, C, H, W) in [0, 1]."""
    if images.dtype == torch.uint8:
        if images.ndim == 3:
            images = images.unsqueeze(-1)
        if images.ndim != 4:
            raise DataError(f"uint8 images must be (B,H,W) or (B,H,W,C), got {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    if images.ndim != 4 or not images.is_floating_point():
        raise DataError(
            f"images must be uint8 (B,H,W[,C]) or float (B,C,H,W), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    return images.float()
