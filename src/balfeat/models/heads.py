"""Projection heads of MoCo.

- ``LinearHead``: MoCo v1 (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722), one ``fc``.
- ``MLPHead``: MoCo v2 (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
  https://arxiv.org/abs/2003.04297), ``Linear - ReLU - Linear``.
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
    """``Linear(in, hidden) - ReLU - Linear(hidden, out)``. Shape: (B, in_dim) -> (B, out_dim).

    Args:
        in_dim: backbone feature size.
        out_dim: embedding size (MoCo v2: 128).
        hidden_dim: hidden size; default ``in_dim`` as in MoCo v2.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_dim) -> (B, out_dim)."""
        return self.fc2(self.relu(self.fc1(x)))
