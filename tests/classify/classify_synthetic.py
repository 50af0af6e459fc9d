"""Synthetic images and tiny backbones shared by the classify tests (imported by name)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class TinyImages(Dataset):
    """Separable synthetic images: each class is a noisy prototype. Has ``.targets``."""

    def __init__(self, n_per_class: list[int], size: int = 8, seed: int = 0, noise: float = 0.6):
        gen = torch.Generator().manual_seed(1234)
        protos = torch.randn(len(n_per_class), 1, size, size, generator=gen)
        g = torch.Generator().manual_seed(seed)
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
        self.images = protos[labels] + noise * torch.randn(len(labels), 1, size, size, generator=g)
        self.targets = labels.numpy().astype(np.int64)
        self.num_classes = len(n_per_class)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


class TinyBackbone(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.out_dim = channels * 4
        with torch.no_grad():  # non-trivial running stats so a train-mode pass changes them
            self.bn.running_mean.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 2).flatten(1)


class SneakyBackbone(TinyBackbone):
    """A buggy backbone whose forward switches BatchNorm back to train mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bn.train()
        return super().forward(x)
