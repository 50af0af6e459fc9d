"""Tiny backbone, data and training loop shared by the tests of KCL's successors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from balfeat.models.backbones import Backbone


class TinyBackbone(Backbone):
    """Flatten -> Linear -> BatchNorm1d -> ReLU; ``out_dim`` 16. Input (B, 1, 4, 4)."""

    def __init__(self, in_features: int = 16) -> None:
        super().__init__()
        self.out_dim = 16
        self.fc = nn.Linear(in_features, 16)
        self.bn = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.fc(x.flatten(1))))


def batches(
    steps: int, batch: int = 16, classes: int = 4, seed: int = 0
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """``steps`` batches of two noisy views of class-dependent 4x4 images and their labels."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 1, 4, 4, generator=gen) * 2
    labels_all = torch.arange(64) % classes
    images = centers[labels_all] + 0.5 * torch.randn(64, 1, 4, 4, generator=gen)
    for _ in range(steps):
        idx = torch.randperm(64, generator=gen)[:batch]
        x = images[idx]
        views = [x + 0.3 * torch.randn(x.shape, generator=gen) for _ in range(2)]
        yield views, labels_all[idx]


def train(method: nn.Module, steps: int = 20, lr: float = 0.5, seed: int = 0) -> list[float]:
    """SGD steps on :func:`batches`; the losses."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)
    method.train()
    losses = []
    for views, labels in batches(steps, seed=seed):
        out = method(views, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step()  # type: ignore[operator]
        losses.append(float(out["loss"].detach()))
    return losses


def falls(losses: list[float]) -> bool:
    """The mean of the last 5 losses is below the mean of the first 5."""
    return sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def tiny_method_config(name: str, out: Path, extra: tuple[str, ...] = ()) -> Any:
    """The config of the registered method ``name`` on tiny, imbalanced synthetic data (CPU,
    resnet8, 16 px, batch 8, one epoch); ``extra`` overrides come last."""
    from balfeat.engine.config import load_config, overrides_for

    return load_config(
        None,
        overrides_for(
            name,
            [
                f"method.name={name}",
                "data.dataset=synthetic",
                "data.synthetic_size=96",
                "data.num_classes=4",
                "data.imbalance_ratio=4",
                "data.image_size=16",
                "data.num_workers=0",
                "model.backbone=resnet8",
                "method.K=16",
                "method.dim=8",
                "method.bn_splits=2",
                "method.target_steps=20",
                "optim.batch_size=8",
                "optim.epochs=1",
                "run.progress=false",
                "run.device=cpu",
                f"run.output_dir={out}",
                *extra,
            ],
        ),
    )


def trainer_one_step(name: str, tmp_path: Path, extra: tuple[str, ...] = ()) -> Any:
    """One optimiser step of the registered method ``name`` through the Trainer (CPU, tiny,
    imbalanced synthetic data); returns the trainer."""
    from balfeat.engine.trainer import Trainer

    trainer = Trainer(tiny_method_config(name, tmp_path, ("run.max_steps=1", *extra)))
    summary = trainer.fit()
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])
    return trainer
