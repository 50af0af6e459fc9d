"""Checks of what a method is built from and given each step, done where it enters.

Every check reads attributes, shapes and dtypes only (nothing that waits for a GPU), so ``forward``
can run them every step; the range of the labels is checked as the losses check it
(``balfeat.losses.shapes.check_label_range``: at once on the CPU, queued on a GPU). A mismatch
raises :class:`~balfeat.errors.BalfeatError` naming the method and the argument instead of a torch
error deep in the backbone or the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.losses.shapes import check_label_range

_HALF = (torch.float16, torch.bfloat16)


def backbone_out_dim(where: str, backbone: nn.Module) -> int:
    """The backbone's ``out_dim`` (features per image), refusing a backbone without one."""
    out_dim = getattr(backbone, "out_dim", None)
    if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
        raise BalfeatError(
            f"{where}: the backbone {type(backbone).__name__} needs an integer attribute "
            f"out_dim >= 1 (its feature size), got {out_dim!r}; build it with "
            "balfeat.models.backbones.build_backbone or set out_dim on your module"
        )
    return out_dim


def check_num_classes(where: str, num_classes: int) -> None:
    """``num_classes`` is a whole number >= 1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BalfeatError(f"{where}: num_classes must be an integer >= 1, got {num_classes!r}")


def check_precision(where: str, images: torch.Tensor) -> None:
    """Half-precision images are given inside ``torch.autocast``, where the weights stay float32.

    Outside autocast a float16/bfloat16 batch meets float32 weights and torch fails deep in the
    first layer with a dtype error; this says what to do instead. (A model converted to half
    precision as a whole is not a supported way to train these methods.)
    """
    if images.dtype in _HALF and not torch.is_autocast_enabled(images.device.type):
        raise BalfeatError(
            f"{where}: the images are {images.dtype} outside autocast; pass float32 images "
            f"and wrap the forward in torch.autocast({images.device.type!r}, "
            f"dtype={images.dtype}) for mixed precision (balfeat pretrain: run.precision)"
        )


def check_batch(
    where: str,
    images: Any,
    labels: Any,
    views: int,
    uses_labels: bool,
    *,
    num_classes: int | None = None,
) -> None:
    """The images of a batch fit ``views`` and, when the method reads them, so do the labels.

    Args:
        where: the method's name.
        images: one tensor (B, ...) for ``views == 1``; a list of ``views`` such tensors with
            one B otherwise.
        labels: class ids. Shape: (B,), integer dtype (checked only when ``uses_labels``).
        views: crops per image (>= 1).
        uses_labels: whether the method reads the labels.
        num_classes: C when the method knows it: labels must then lie in ``[0, C)``; None: only
            their dtype and shape are checked here (the loss checks ``>= 0``).
    """
    if views == 1:
        if not isinstance(images, torch.Tensor) or images.dim() < 2:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise BalfeatError(
                f"{where} takes one image tensor (B, C, H, W) per batch (method.views == 1), "
                f"got {got}"
            )
        batch = images.shape[0]
    else:
        if (
            isinstance(images, torch.Tensor)
            or not isinstance(images, Sequence)
            or len(images) != views
            or not all(isinstance(v, torch.Tensor) and v.dim() >= 2 for v in images)
        ):
            what = "two views [view_q, view_k]" if views == 2 else f"{views} views"
            raise BalfeatError(
                f"{where} needs {what} per batch, each (B, C, H, W); build the dataset with "
                f"MultiView(transforms) (method.views == {views})"
            )
        sizes = [v.shape[0] for v in images]
        if len(set(sizes)) > 1:
            what = "the two views" if views == 2 else "the views"
            raise BalfeatError(
                f"{where}: {what} hold {' and '.join(str(n) for n in sizes)} images; all views "
                "of a batch are crops of the same B images"
            )
        batch = images[0].shape[0]
    for view in [images] if views == 1 else images:
        check_precision(where, view)
    if not uses_labels:
        return
    if not isinstance(labels, torch.Tensor):
        raise BalfeatError(
            f"{where} is supervised and needs the labels (B,) of the batch, got "
            f"{type(labels).__name__}"
        )
    if labels.shape != (batch,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise BalfeatError(
            f"{where}: labels must be integer class ids of shape ({batch},), one per image, "
            f"got {tuple(labels.shape)} {labels.dtype}"
        )
    if num_classes is not None:
        check_label_range(where, "labels", labels, num_classes)
