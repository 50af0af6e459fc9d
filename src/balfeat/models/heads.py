"""Projection heads of MoCo.

- ``LinearHead``: MoCo v1 (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722), one ``fc``.
- ``MLPHead``: MoCo v2 (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
  https://arxiv.org/abs/2003.04297), ``Linear - ReLU - Linear``; with ``batch_norm``
  ``Linear - BatchNorm1d - ReLU - Linear``, the head of the PaCo and BCL authors' code.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """One linear layer. Shape: (B, in_dim) -> (B, out_dim).

    Args:
        in_dim: backbone feature size.
        out_dim: embedding size (MoCo: 128).
    """

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_dim) -> (B, out_dim)."""
        return self.fc(x)


class MLPHead(nn.Module):
    """``Linear(in, hidden) - [BatchNorm1d(hidden)] - ReLU - Linear(hidden, out)``.

    Shape: (B, in_dim) -> (B, out_dim). Submodules ``fc1``, ``bn`` (only with ``batch_norm``),
    ``relu``, ``fc2``; without ``batch_norm`` the state dict is MoCo v2's head's (``fc1``,
    ``fc2``).

    Args:
        in_dim: backbone feature size.
        out_dim: embedding size (MoCo v2: 128).
        hidden_dim: hidden size; default ``in_dim`` as in MoCo v2 (and PaCo / BCL).
        batch_norm: a ``BatchNorm1d(hidden)`` after ``fc1`` (PaCo's
            ``PaCo/LT/moco/builder.py:50``, BCL's ``models/resnext.py:291,301``). In training it
            normalises over the rows of the batch, so it needs at least 2 rows.
        hidden_layers: hidden layers (>= 1). Each one past the first is ``Linear(hidden,
            hidden) - ReLU`` in ``extra`` (the authors' GPaCo head has 2:
            ``Linear-ReLU-Linear-ReLU-Linear``, ``GPaCo/LT/moco/builder.py:47``); with 1 the
            module has no ``extra`` and its state dict is the one-hidden-layer head's.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 128,
        hidden_dim: int | None = None,
        batch_norm: bool = False,
        hidden_layers: int = 1,
    ) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"MLPHead: hidden_layers={hidden_layers} must be >= 1")
        hidden = in_dim if hidden_dim is None else hidden_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn: nn.Module | None = nn.BatchNorm1d(hidden) if batch_norm else None
        self.relu = nn.ReLU(inplace=True)
        self.extra: nn.Sequential | None = (
            nn.Sequential(
                *(
                    m
                    for _ in range(hidden_layers - 1)
                    for m in (nn.Linear(hidden, hidden), nn.ReLU())
                )
            )
            if hidden_layers > 1
            else None
        )
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_dim) -> (B, out_dim)."""
        h = self.fc1(x)
        if self.bn is not None:
            h = self.bn(h)
        h = self.relu(h)
        if self.extra is not None:
            h = self.extra(h)
        return self.fc2(h)


def make_head(
    in_dim: int, dim: int, mlp: bool, batch_norm: bool = False, hidden_layers: int = 1
) -> nn.Module:
    """The projection head of the contrastive methods.

    Args:
        in_dim: backbone feature size.
        dim: embedding size.
        mlp: ``MLPHead`` (hidden size ``in_dim``) instead of a ``LinearHead``.
        batch_norm: the MLP's ``BatchNorm1d`` (PaCo / BCL authors' heads); needs ``mlp``.
        hidden_layers: the MLP's hidden layers (GPaCo authors' head: 2); > 1 needs ``mlp``.

    Returns:
        The head. Shape: (B, in_dim) -> (B, dim).

    Raises:
        ValueError: ``batch_norm`` without ``mlp`` (the callers check it first with a
            user-facing message).
    """
    if batch_norm and not mlp:
        raise ValueError("make_head: batch_norm needs mlp=True (the BatchNorm is the MLP's)")
    if hidden_layers != 1 and not mlp:
        raise ValueError("make_head: hidden_layers needs mlp=True (a linear head has none)")
    if not mlp:
        return LinearHead(in_dim, dim)
    return MLPHead(in_dim, dim, batch_norm=batch_norm, hidden_layers=hidden_layers)
