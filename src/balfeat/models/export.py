"""Export a learned backbone for use elsewhere: torchvision state dict or detectron2 pickle.

The detectron2 conversion follows MoCo's ``detection/convert-pretrain-to-detectron2.py``
(facebookresearch/moco): ``conv1`` -> ``stem.conv1``, ``bn1`` -> ``stem.conv1.norm``,
``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``, ``downsample.0/1`` -> ``shortcut`` /
``shortcut.norm``; the result is pickled as ``{"model": ..., "__author__": "balfeat",
"matching_heuristics": True}`` with numpy arrays.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from balfeat.atomic import atomic_write_bytes
from balfeat.errors import CheckpointError
from balfeat.models.loading import StateDict, load_backbone_state


def to_detectron2_keys(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Rename torchvision ResNet keys to detectron2's and convert tensors to numpy arrays.

    BN ``num_batches_tracked`` buffers are dropped (detectron2 does not use them).

    Raises:
        CheckpointError: a CIFAR-style ResNet (no ``layer4``), which detectron2 cannot use.
    """
    if not any(k.startswith("layer4.") for k in state):
        raise CheckpointError(
            "detectron2 export needs an ImageNet-style ResNet with layer1..layer4; this backbone "
            "has no layer4 (a CIFAR ResNet?) - use --format torchvision"
        )
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        if "layer" not in k:
            k = "stem." + k
        for t in [1, 2, 3, 4]:
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in [1, 2, 3]:
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut")
        k = k.replace("downsample.1", "shortcut.norm")
        out[k] = v.detach().cpu().numpy()
    return out


def export_torchvision(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None = None,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint as a plain torchvision state dict (no ``fc``).

    ``torchvision.models.resnet50().load_state_dict(torch.load(out), strict=False)`` then misses
    exactly ``fc.weight`` and ``fc.bias``.

    Returns:
        The ``info`` of :func:`balfeat.models.loading.load_backbone_state` plus ``out`` and
        ``num_tensors``.
    """
    state, info = load_backbone_state(checkpoint, arch)
    clean: StateDict = {k: v.detach().cpu().clone() for k, v in state.items()}
    path = Path(out)
    atomic_write_bytes(path, lambda fh: torch.save(clean, fh))
    info.update(out=str(path), num_tensors=len(clean), format_out="torchvision")
    return info


def export_detectron2(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None = None,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint as a detectron2 ``.pkl`` (MoCo's conversion).

    Use it in detectron2 with ``MODEL.WEIGHTS out.pkl``, ``MODEL.PIXEL_MEAN/STD`` of torchvision
    and ``INPUT.FORMAT RGB`` as MoCo's detection configs do.

    Returns:
        The ``info`` of :func:`balfeat.models.loading.load_backbone_state` plus ``out`` and
        ``num_tensors``.
    """
    state, info = load_backbone_state(checkpoint, arch)
    model = to_detectron2_keys(state)
    payload = {"model": model, "__author__": "balfeat", "matching_heuristics": True}
    path = Path(out)
    atomic_write_bytes(path, lambda fh: pickle.dump(payload, fh))
    info.update(out=str(path), num_tensors=len(model), format_out="detectron2")
    return info
