"""Export a learned backbone for use elsewhere: torchvision state dict or detectron2 pickle.

Formats:

- ``torchvision``: a state dict that ``torchvision.models.<arch>()`` loads with only ``fc``
  missing. Only for backbones torchvision can build: a torchvision ResNet name, the ImageNet stem
  (7x7 stride-2 conv and max-pool) and 3 input channels.
- ``detectron2``: the same weights under detectron2's names, pickled with numpy arrays (below);
  the same compatibility is required, as detectron2's ResNet has the same stem.
- ``backbone``: the backbone's state dict under balfeat's own names (torchvision's naming for
  every ResNet, incl. the small-image stem and the CIFAR ResNets): for any backbone, loadable with
  ``balfeat.models.backbones.build_backbone(arch, small_images=...)``, labelled as such. For a
  timm backbone (``timm/<name>``) these are timm's own names: the file loads with
  ``timm.create_model(name, num_classes=0).load_state_dict(sd, strict=True)``.

An export never replaces a training checkpoint (a file holding an optimizer state) nor the file
it reads; an existing output is replaced only with ``force=True``.

The detectron2 conversion follows MoCo's ``detection/convert-pretrain-to-detectron2.py``
(facebookresearch/moco): ``conv1`` -> ``stem.conv1``, ``bn1`` -> ``stem.conv1.norm``,
``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``, ``downsample.0/1`` -> ``shortcut`` /
``shortcut.norm``; the result is pickled as ``{"model": ..., "__author__": "balfeat",
"matching_heuristics": True}`` with numpy arrays.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from balfeat.atomic import atomic_write_bytes
from balfeat.errors import CheckpointError, ConfigError
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
        v = v.detach().cpu()
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy().copy()
    return out


#: The ResNets torchvision (and detectron2) build; the CIFAR ResNets (resnet20...) are not.
TORCHVISION_RESNETS = frozenset(
    {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    | {"wide_resnet50_2", "wide_resnet101_2"}
)


def is_training_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a training checkpoint (balfeat's or a reference one): a PyTorch file
    whose top level holds an ``optimizer`` state. Unreadable or other files give ``False``."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):  # torch.save writes a zip archive
        return False
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return False
    return isinstance(obj, Mapping) and "optimizer" in obj


def check_export_target(
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | Mapping[str, Any],
    force: bool = False,
) -> None:
    """Refuse an output that would destroy something, before any work.

    Raises:
        ConfigError: ``out`` is the checkpoint being read, a training checkpoint (even with
            ``force``), a directory, or an existing file without ``force``.
    """
    p = Path(out)
    if p.is_dir():
        raise ConfigError(f"--out {str(p)!r} is a directory; give a file name to write")
    if not p.exists():
        return
    if (
        isinstance(source, (str, os.PathLike))
        and Path(source).exists()
        and os.path.samefile(p, source)
    ):
        raise ConfigError(
            f"--out {str(p)!r} is the checkpoint being exported; writing it would replace "
            "the checkpoint - choose another output file (e.g. backbone.pth)"
        )
    if is_training_checkpoint(p):
        raise ConfigError(
            f"--out {str(p)!r} is a training checkpoint (it holds an optimizer state); an export "
            "never replaces one, not even with --force - choose another output file"
        )
    if not force:
        raise ConfigError(
            f"--out {str(p)!r} already exists; pass --force to replace it, or choose another file"
        )


def torchvision_compatible(info: Mapping[str, Any]) -> str | None:
    """``None`` when torchvision (and detectron2) can build the backbone described by ``info``
    (from :func:`balfeat.models.loading.load_backbone_state`), else the reason why not."""
    arch = info.get("arch")
    if arch not in TORCHVISION_RESNETS:
        return (
            f"{info.get('description') or arch or 'this backbone'} is not one of torchvision's "
            f"ResNets ({', '.join(sorted(TORCHVISION_RESNETS))})"
        )
    if info.get("small_images"):
        return (
            f"{info.get('description', arch)} has the small-image stem (3x3 stride-1 conv1, no "
            "max-pool) that torchvision's and detectron2's ResNets do not have"
        )
    if info.get("in_channels") not in (None, 3):
        return f"it takes {info.get('in_channels')} input channel(s), torchvision's ResNets take 3"
    return None


def _export(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None,
    force: bool,
    fmt: str,
    write: Callable[[StateDict], tuple[int, Callable[[Any], object]]],
) -> dict[str, Any]:
    check_export_target(out, checkpoint, force)
    state, info = load_backbone_state(checkpoint, arch)
    if fmt != "backbone":
        why = torchvision_compatible(info)
        if why is not None:
            raise CheckpointError(
                f"cannot export as {fmt}: {why}; use --format backbone (balfeat's backbone state "
                "dict, loadable with balfeat.models.backbones.build_backbone)"
            )
    num_tensors, dump = write(state)
    path = Path(out)
    atomic_write_bytes(path, dump)
    info.update(out=str(path), num_tensors=num_tensors, format_out=fmt)
    return info


def _torch_writer(state: StateDict) -> tuple[int, Callable[[Any], object]]:
    clean: StateDict = {k: v.detach().cpu().clone() for k, v in state.items()}
    return len(clean), lambda fh: torch.save(clean, fh)


def export_torchvision(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint as a plain torchvision state dict (no ``fc``).

    ``torchvision.models.resnet50().load_state_dict(torch.load(out), strict=False)`` then misses
    exactly ``fc.weight`` and ``fc.bias``.

    Args:
        checkpoint: the checkpoint file (or loaded checkpoint) to export.
        out: the file to write; see :func:`check_export_target`.
        arch: the expected architecture (checked), or ``None``.
        force: replace an existing ``out`` (never a training checkpoint).

    Returns:
        The ``info`` of :func:`balfeat.models.loading.load_backbone_state` plus ``out`` and
        ``num_tensors``.

    Raises:
        CheckpointError: the backbone is not one torchvision can build (small-image stem, CIFAR
            ResNet, not 3 input channels); export it with :func:`export_backbone`.
        ConfigError: ``out`` must not be written (see :func:`check_export_target`).
    """
    return _export(checkpoint, out, arch, force, "torchvision", _torch_writer)


def export_backbone(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the backbone state dict under balfeat's names, for any backbone (no ``fc``).

    Load it with ``build_backbone(info["arch"], small_images=info["small_images"])``. Arguments,
    return value and errors as :func:`export_torchvision`, without the compatibility check.
    """
    return _export(checkpoint, out, arch, force, "backbone", _torch_writer)


def export_detectron2(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str],
    arch: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint as a detectron2 ``.pkl`` (MoCo's conversion).

    Use it in detectron2 with ``MODEL.WEIGHTS out.pkl``, ``MODEL.PIXEL_MEAN/STD`` of torchvision
    and ``INPUT.FORMAT RGB`` as MoCo's detection configs do. The pickle holds only dicts, strings
    and numpy arrays, so reading it needs neither torch nor balfeat.

    Returns, raises: as :func:`export_torchvision`.
    """

    def write(state: StateDict) -> tuple[int, Callable[[Any], object]]:
        model = to_detectron2_keys(state)
        payload = {"model": model, "__author__": "balfeat", "matching_heuristics": True}
        return len(model), lambda fh: pickle.dump(payload, fh, protocol=4)

    return _export(checkpoint, out, arch, force, "detectron2", write)
