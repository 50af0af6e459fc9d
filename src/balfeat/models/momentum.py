"""Momentum (exponential moving average) update of a key encoder, as in MoCo."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target <- m * target + (1 - m) * online``, parameter by parameter (buffers untouched).

    As in MoCo, only parameters follow the online network; the target's BatchNorm running
    statistics come from its own forward passes.

    Args:
        online: the network trained by gradient descent.
        target: the momentum copy (same architecture).
        m: momentum in [0, 1]; 0 copies ``online``, 1 leaves ``target`` unchanged.
    """
    on: list[torch.Tensor] = list(online.parameters())
    tg: list[torch.Tensor] = list(target.parameters())
    if len(on) != len(tg):
        raise ValueError(
            f"momentum_update: online has {len(on)} parameters, target {len(tg)}; "
            "they must be the same architecture"
        )
    if on:
        torch._foreach_mul_(tg, m)
        torch._foreach_add_(tg, on, alpha=1.0 - m)
