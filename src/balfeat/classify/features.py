"""Run a frozen network over a dataset: a backbone's features (once or over augmented passes), or
a method's own classifier's logits. The one loop of its kind in the package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    passes: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    keep_on_device: bool = False,
    progress: bool = False,
    call: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen backbone (in eval mode) over every sample of a dataset.

    The backbone's mode is restored afterwards; its weights and BN buffers are not touched.

    Args:
        backbone: maps images (B, C, H, W) to features (B, D).
        dataset: yields ``(image, label)``; with ``passes > 0`` its transform should be an
            augmentation (each pass draws new random crops/flips).
        batch_size: images per forward pass.
        device: where the backbone runs; defaults to the backbone's own device.
        passes: 0 for one deterministic pass over the dataset as it is; N > 0 for N passes,
            pass ``p`` seeded with ``seed + p`` so the augmented views are reproducible.
        seed: base seed of the augmentation RNG (torch's global RNG is forked, not disturbed).
        num_workers: DataLoader workers.
        keep_on_device: return the features on ``device`` instead of the CPU.
        progress: a tqdm bar per pass on stderr (feature extraction of large sets takes long).
        call: what runs on each batch of images (default ``backbone`` itself; e.g. a method's
            ``classify``, run with the method in eval mode).

    Returns:
        ``(features, labels)``: features float32 of shape (N, D) when ``passes == 0``, else
        (passes, N, D); labels int64 of shape (N,).
    """
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    if device is None:
        try:
            device = next(backbone.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    device = torch.device(device)
    forward = backbone if call is None else call
    was_training = backbone.training
    backbone.eval()
    out_device = device if keep_on_device else torch.device("cpu")
    views: list[torch.Tensor] = []
    labels_out: torch.Tensor | None = None
    try:
        for p in range(max(passes, 1)):
            devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed + p)
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=False,
                    num_workers=num_workers,
                    pin_memory=device.type == "cuda",
                    generator=torch.Generator().manual_seed(seed + p),
                )
                feats: list[torch.Tensor] = []
                labs: list[torch.Tensor] = []
                batches: Any = loader
                if progress:
                    from tqdm import tqdm

                    batches = tqdm(
                        loader,
                        desc=f"features, pass {p + 1}/{max(passes, 1)}",
                        leave=False,
                        dynamic_ncols=True,
                    )
                for images, labels in batches:
                    images = images.to(device, non_blocking=True)
                    f = forward(images).float()
                    feats.append(f.to(out_device))
                    labs.append(torch.as_tensor(labels, dtype=torch.int64))
            views.append(torch.cat(feats) if feats else torch.empty(0, 0))
            if labels_out is None:
                labels_out = torch.cat(labs) if labs else torch.empty(0, dtype=torch.int64)
    finally:
        backbone.train(was_training)
    assert labels_out is not None
    features = views[0] if passes == 0 else torch.stack(views)
    return features, labels_out.to(out_device)


def classifier_logits(
    method: nn.Module, dataset: Dataset, device: torch.device | str, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """A method's own classifier on every image of ``dataset``, in eval mode.

    Args:
        method: a module with ``classify(images (B, C, H, W)) -> logits (B, num_classes)``.
        dataset: yields ``(image (C, H, W), label)``.
        device: where the method lives.
        batch_size: images per forward.

    Returns:
        ``(logits (N, num_classes) float32, labels (N,) int64)`` in dataset order.
    """
    classify: Callable[[torch.Tensor], torch.Tensor] = method.classify  # type: ignore[assignment]
    logits, labels = extract_features(
        method, dataset, batch_size=batch_size, device=device, call=classify
    )
    return logits.numpy(), labels.numpy().astype(np.int64)
