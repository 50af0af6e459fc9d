"""Checks of what a loss is given, done where it enters the loss: one policy for every loss.

Every check compares shapes, dtypes and Python numbers only; the one check of tensor values
(:func:`check_label_range`) is queued on CUDA (``torch._assert_async``) and reads them elsewhere,
so no check waits for a GPU. A mismatch raises
:class:`~balfeat.errors.BalfeatError` naming the loss, the argument and the shapes, instead of a
torch error deep inside the loss or, worse, a result silently broadcast to the wrong shape (labels
of shape (B, 1) against (B,) would compare as a (B, B) matrix).
"""

from __future__ import annotations

import math

import torch

from balfeat.errors import BalfeatError


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_features(where: str, name: str, x: torch.Tensor, rows: int | None = None) -> None:
    """``x`` is a non-empty floating (rows, dim) matrix.

    Args:
        where: the loss, e.g. ``"moco_loss"``.
        name: the argument, e.g. ``"q"``.
        x: the tensor. Shape: (rows, dim).
        rows: the number of rows it must have, or None for any number >= 1.
    """
    if not isinstance(x, torch.Tensor):
        raise BalfeatError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise BalfeatError(
            f"{where}: {name} must be a 2-D (batch, dim) tensor, got shape {_shape(x)}"
        )
    if not x.is_floating_point():
        raise BalfeatError(f"{where}: {name} must be a floating-point tensor, got {x.dtype}")
    if rows is None and x.shape[0] == 0:
        raise BalfeatError(f"{where}: {name} is an empty batch (shape {_shape(x)}); pass >= 1 row")
    if rows is not None and x.shape[0] != rows:
        raise BalfeatError(f"{where}: {name} has {x.shape[0]} rows, expected {rows}: {_shape(x)}")


def check_pair(where: str, q: torch.Tensor, k: torch.Tensor, names: str = "q, k") -> None:
    """``q`` and ``k`` are non-empty floating matrices of one shape (batch, dim)."""
    first, second = (s.strip() for s in names.split(","))
    check_features(where, first, q)
    check_features(where, second, k)
    if q.shape != k.shape:
        raise BalfeatError(
            f"{where}: {first} {_shape(q)} and {second} {_shape(k)} must have the same "
            "(batch, dim) shape: one key per query"
        )


MIN_TEMPERATURE = 1e-4
"""The smallest temperature a loss accepts.

With unit features a logit is at most ``1 / T`` in size: at ``T = 1e-4`` that is 1e4, finite in
float16 (largest 65504), bfloat16 and float32, and every loss subtracts the largest logit before
``exp``. Far below it ``q / T`` overflows (``T = 1e-45`` gives ``inf - inf = NaN``). The papers
use 0.05 to 0.2.
"""


def check_temperature(where: str, temperature: float, name: str = "temperature") -> None:
    """``temperature`` is a finite number ``>= MIN_TEMPERATURE`` (refuses 0, < 0, inf, NaN)."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < MIN_TEMPERATURE
    ):
        raise BalfeatError(
            f"{where}: {name}={temperature!r} must be a finite number >= {MIN_TEMPERATURE:g} "
            "(below it the logits q/T overflow); the papers use 0.07 (MoCo v1, KCL, SupCon, "
            "TSC, BCL) or 0.2 (MoCo v2, PaCo)"
        )


def check_keys(
    where: str, name: str, keys: torch.Tensor, dim: int, *, nonempty: bool = False
) -> None:
    """``keys`` is a floating (K, dim) matrix with the queries' ``dim``.

    ``nonempty=True`` refuses ``K = 0`` (a queue of no keys: the loss has no negatives).
    """
    if not isinstance(keys, torch.Tensor):
        raise BalfeatError(f"{where}: {name} must be a torch.Tensor, got {type(keys).__name__}")
    if keys.dim() != 2 or keys.shape[1] != dim or not keys.is_floating_point():
        raise BalfeatError(
            f"{where}: {name} must be a floating (K, {dim}) tensor (the queries' dim {dim}), "
            f"got shape {_shape(keys)} {keys.dtype}"
        )
    if nonempty and keys.shape[0] == 0:
        raise BalfeatError(
            f"{where}: {name} is empty (shape {_shape(keys)}); a queue needs K >= 1 keys "
            "(build it with K >= 1; unfilled slots are labelled -1 and stay negatives)"
        )


def check_labels(where: str, name: str, labels: torch.Tensor, rows: int | None) -> None:
    """``labels`` is an integer vector (rows,) of class ids (``rows=None``: any length).

    Float labels are refused (``1.5`` would be compared or truncated silently), and so is a
    (rows, 1) column, which torch would broadcast against (rows,) into a (rows, rows) matrix.
    """
    if not isinstance(labels, torch.Tensor):
        raise BalfeatError(f"{where}: {name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or (rows is not None and labels.shape[0] != rows):
        size = "N" if rows is None else str(rows)
        raise BalfeatError(
            f"{where}: {name} must have shape ({size},), one class id per row, got {_shape(labels)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise BalfeatError(
            f"{where}: {name} must hold integer class ids (e.g. torch.int64), got {labels.dtype}"
        )


_QUEUED_CHECK_DEVICES = ("cuda", "meta")


def check_label_range(where: str, name: str, labels: torch.Tensor, num_classes: int | None) -> None:
    """Every label lies in ``[0, num_classes)`` (``num_classes=None``: only ``>= 0``).

    On the CPU (and devices without ``torch._assert_async``, e.g. MPS) the smallest and largest
    label are read and a bad one raises :class:`~balfeat.errors.BalfeatError` at once. On CUDA
    the check is queued with ``torch._assert_async`` (no synchronisation): a bad label stops the
    device's work with this message at the next synchronisation. (``meta`` tensors, which hold
    no values, take the queued path too.)
    """
    if labels.numel() == 0:
        return
    bound = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
    if labels.device.type in _QUEUED_CHECK_DEVICES:
        ok = labels >= 0
        if num_classes is not None:
            ok &= labels < num_classes
        torch._assert_async(ok.all(), f"{where}: {name} holds a class id that is not {bound}")
        return
    low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
    if low < 0:
        raise BalfeatError(
            f"{where}: {name} has a negative class label {low}; labels must be class ids {bound}"
        )
    if num_classes is not None and high >= num_classes:
        raise BalfeatError(
            f"{where}: {name} has class id {high}, out of range: labels must be class ids "
            f"{bound} ({num_classes} classes)"
        )
