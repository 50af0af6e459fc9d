"""Read a backbone's weights out of the checkpoint formats of balfeat and the reference code.

Supported layouts (all returned in torchvision key names without ``fc``):

- balfeat training checkpoints: ``{"model": {"backbone.conv1.weight": ..., "head.*": ...}, ...}``;
- MoCo / BalFeat (facebookresearch/moco, bingykang/BalFeat ``main_moco.py``):
  ``{"state_dict": {"module.encoder_q.conv1.weight": ..., "module.encoder_q.fc.0.weight": ...,
  "module.encoder_k.*", "module.queue", "module.queue_ptr", "module.label_queue"}, "arch": ...}``;
- supervised / linear-classification checkpoints with DDP ``module.`` prefixes
  (``{"state_dict": {"module.conv1.weight": ..., "module.fc.weight": ...}}``);
- classifier-balancing: ``{"state_dict": {"feat_model": {"module.conv1.weight": ...},
  "classifier": {...}}}``;
- plain torchvision state dicts (``resnet50().state_dict()``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balfeat.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# Keys that belong to a classifier / projection head, not to the backbone.
_HEAD_PREFIXES = ("fc.", "head.", "classifier.")

_TORCHVISION_DEPTHS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


def _read(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; check the path")
    try:
        # Reference checkpoints hold plain containers, tensors and argparse-free metadata, but
        # balfeat checkpoints also hold numpy RNG state, which weights_only=True refuses.
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read ({type(err).__name__}: {err}); the file is "
            "truncated, corrupt or not a PyTorch checkpoint"
        ) from None


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _take_prefix(flat: StateDict, prefix: str) -> tuple[StateDict, list[str]]:
    """The entries under ``prefix`` (prefix removed) and the sorted names of all others."""
    return _strip(flat, prefix), sorted(k for k in flat if not k.startswith(prefix))


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _strip_module(state: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Guess the ResNet a state dict (torchvision key names) belongs to.

    Uses the number of blocks per stage, the block type (``conv3`` means bottleneck), the stem
    kernel and the channel widths.

    Returns:
        ``{"arch": "resnet50" | "resnet20" | ... | None, "small_images": bool | None,
        "in_channels": int | None, "blocks": [...], "block": "basic" | "bottleneck" | None,
        "width": int | None}``.
    """
    blocks: dict[int, set[int]] = {}
    for k in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = tuple(len(blocks[i]) for i in sorted(blocks))
    block = None
    if counts:
        block = "bottleneck" if any(".conv3." in k for k in state) else "basic"
    conv1 = state.get("conv1.weight")
    in_channels = int(conv1.shape[1]) if conv1 is not None and conv1.dim() == 4 else None
    stem_k = int(conv1.shape[-1]) if conv1 is not None and conv1.dim() == 4 else None
    l1 = state.get("layer1.0.conv1.weight")
    width = int(l1.shape[0]) if l1 is not None else None
    arch: str | None = None
    small: bool | None = None
    if len(counts) == 4 and block is not None:
        name = _TORCHVISION_DEPTHS.get((block, counts))
        if name and block == "bottleneck" and width == 128:
            name = {"resnet50": "wide_resnet50_2", "resnet101": "wide_resnet101_2"}.get(name)
        arch = name
        small = stem_k == 3 if stem_k is not None else None
    elif len(counts) == 3 and block == "basic" and len(set(counts)) == 1:
        arch = f"resnet{6 * counts[0] + 2}"
        small = True
    return {
        "arch": arch,
        "small_images": small,
        "in_channels": in_channels,
        "blocks": list(counts),
        "block": block,
        "width": width,
    }


def describe_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """A short human description such as ``resnet50 (bottleneck blocks [3, 4, 6, 3], 7x7 stem)``."""
    a = infer_architecture(state)
    if a["block"] is None:
        return "no ResNet (no layerN.M.* keys)"
    name = a["arch"] or "an unknown ResNet"
    stem = {True: ", small-image 3x3 stem", False: ", 7x7 stem", None: ""}[a["small_images"]]
    chans = f", {a['in_channels']} input channels" if a["in_channels"] else ""
    return f"{name} ({a['block']} blocks {a['blocks']}, width {a['width']}{stem}{chans})"


def _find_config_value(obj: Any, key: str, depth: int = 0) -> Any:
    if depth > 4 or not isinstance(obj, Mapping):
        return None
    if key in obj and not isinstance(obj[key], Mapping):
        return obj[key]
    for v in obj.values():
        found = _find_config_value(v, key, depth + 1)
        if found is not None:
            return found
    return None


def _split_head(state: StateDict) -> tuple[StateDict, list[str]]:
    kept = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    dropped = sorted(k for k in state if k.startswith(_HEAD_PREFIXES))
    return kept, dropped


def load_classifier_state(
    path: str | os.PathLike[str],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The linear classifier of a checkpoint: ``(weight (C, F), bias (C,) or None)``.

    Reads a balfeat checkpoint (``model`` entry, keys ``head.weight`` / ``head.bias``, as SL
    saves them) or the reference's (``state_dict`` with ``[module.]fc.weight`` / ``fc.bias``,
    BalFeat ``main_sl.py``).

    Raises:
        CheckpointError: the file has no linear classifier.
    """
    obj = _read(path)
    if isinstance(obj, Mapping) and _is_tensor_dict(obj.get("model")):
        state, prefix = _strip_module(obj["model"]), "head."
    elif isinstance(obj, Mapping) and _is_tensor_dict(obj.get("state_dict")):
        state, prefix = _strip_module(obj["state_dict"]), "fc."
    else:
        state, prefix = {}, "head."
    weight = state.get(prefix + "weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(
            f"{str(path)!r} has no linear classifier ({prefix}weight of shape (classes, "
            "features)); model.init_classifier needs an SL checkpoint, or set it false"
        )
    return weight, state.get(prefix + "bias")


def load_backbone_state(
    path_or_state: str | os.PathLike[str] | Mapping[str, Any], arch: str | None = None
) -> tuple[StateDict, dict[str, Any]]:
    """Extract a backbone state dict (torchvision names, no ``fc``) from any supported format.

    Args:
        path_or_state: a checkpoint file or an already loaded checkpoint / state dict.
        arch: when given (``resnet50``...), the weights must be of that architecture.

    Returns:
        ``(state_dict, info)`` where info holds ``format`` (``balfeat``, ``moco``,
        ``supervised``, ``classifier-balancing`` or ``torchvision``), ``arch`` (inferred),
        ``small_images``, ``in_channels``, ``dropped`` (head/queue keys left out), ``source``
        and, where the file records them, ``epoch``, ``method``, ``backbone``.

    Raises:
        CheckpointError: unknown layout, no backbone weights, or another architecture than
            ``arch``.
    """
    source = "<state dict>"
    if isinstance(path_or_state, (str, os.PathLike)):
        source = str(path_or_state)
        obj = _read(path_or_state)
    else:
        obj = path_or_state
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a dict checkpoint, got {type(obj).__name__}; save a state dict "
            "or a checkpoint dict"
        )
    info: dict[str, Any] = {"source": source}
    for k in ("epoch", "method", "backbone", "arch"):
        if k in obj and isinstance(obj[k], (str, int)):
            info["checkpoint_" + k if k == "arch" else k] = obj[k]
    if isinstance(obj.get("config"), Mapping):  # a balfeat checkpoint's resolved config
        info["config"] = dict(obj["config"])
    if isinstance(obj.get("train_counts"), Mapping):  # images per class of the training set
        info["train_counts"] = dict(obj["train_counts"])
    raw: StateDict
    if "model" in obj and _is_tensor_dict(obj["model"]):
        info["format"] = "balfeat"
        model = _strip_module(obj["model"])
        raw = _strip(model, "backbone.")
        if not raw:
            raise CheckpointError(
                f"{source}: the 'model' entry has no 'backbone.*' keys (first keys: "
                f"{sorted(model)[:5]}); is this a balfeat checkpoint of a method with a backbone?"
            )
        dropped = sorted(k for k in model if not k.startswith("backbone."))
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
        if "feat_model" in sd and _is_tensor_dict(sd["feat_model"]):
            info["format"] = "classifier-balancing"
            raw = _strip_module(sd["feat_model"])
            dropped = ["classifier.*"] if "classifier" in sd else []
        elif _is_tensor_dict(sd):
            flat = _strip_module(sd)
            if any(k.startswith("encoder_q.") for k in flat):
                info["format"] = "moco"
                raw, dropped = _take_prefix(flat, "encoder_q.")
            else:
                info["format"] = "supervised"
                raw, dropped = flat, []
        else:
            raise CheckpointError(
                f"{source}: 'state_dict' holds neither tensors nor a classifier-balancing "
                "'feat_model'; unsupported checkpoint layout"
            )
    elif _is_tensor_dict(obj):
        flat = _strip_module(obj)
        if any(k.startswith("backbone.") for k in flat):
            info["format"] = "balfeat"
            raw, dropped = _take_prefix(flat, "backbone.")
        elif any(k.startswith("encoder_q.") for k in flat):
            info["format"] = "moco"
            raw, dropped = _take_prefix(flat, "encoder_q.")
        else:
            info["format"] = "torchvision"
            raw, dropped = flat, []
    else:
        raise CheckpointError(
            f"{source}: unknown checkpoint layout (top-level keys {sorted(map(str, obj))[:8]}); "
            "expected a balfeat checkpoint ('model'), a MoCo/supervised checkpoint "
            "('state_dict') or a plain state dict"
        )
    timm_arch = _find_config_value(obj.get("config"), "backbone")
    if not (isinstance(timm_arch, str) and timm_arch.startswith("timm/")):
        timm_arch = arch if arch is not None and arch.startswith("timm/") else None
    # a timm backbone's keys are timm's: its ``head.norm`` (ConvNeXt) is no classifier
    state, head = (raw, []) if timm_arch else _split_head(raw)
    if not state:
        raise CheckpointError(f"{source}: no backbone weights found ({info['format']} layout)")
    info["dropped"] = sorted(set(dropped) | set(head))
    arch_info = infer_architecture(state)
    info.update(arch=arch_info["arch"], in_channels=arch_info["in_channels"])
    info["small_images"] = arch_info["small_images"]
    if info["format"] == "balfeat":
        small = _find_config_value(obj.get("config"), "small_images")
        if isinstance(small, bool):
            info["small_images"] = small
    info["description"] = describe_architecture(state)
    if timm_arch:
        info.update(arch=timm_arch, description=f"{timm_arch} (a timm model)")
        config: Mapping[str, Any] = obj["config"] if isinstance(obj.get("config"), Mapping) else {}
        info["image_size"] = _find_config_value(config, "image_size")
        channels = _find_config_value(config.get("model"), "in_channels") or (
            _find_config_value(config.get("data"), "channels")
        )
        if isinstance(channels, int) and channels:
            info["in_channels"] = channels
        arch_info["arch"] = timm_arch
    if arch is not None and arch_info["arch"] is not None and arch_info["arch"] != arch:
        raise CheckpointError(
            f"{source}: expected a {arch} backbone but the weights look like "
            f"{info['description']}; pass --backbone {arch_info['arch']}"
        )
    return state, info


@dataclass
class LoadReport:
    """What :func:`load_into_backbone` found.

    Attributes:
        missing: keys the module has but the state lacks (after allowed ones are removed).
        unexpected: keys the state has but the module lacks.
        allowed_missing: missing keys that were allowed (e.g. ``fc.weight``/``fc.bias``).
        shape_mismatch: ``key: file shape vs module shape`` lines.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every key matched."""
        return not (self.missing or self.unexpected or self.shape_mismatch)


def load_into_backbone(
    backbone: nn.Module,
    state: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = _HEAD_PREFIXES,
    strict: bool = True,
    source: str = "checkpoint",
) -> LoadReport:
    """Load a backbone state dict, reporting every mismatch.

    Args:
        backbone: the module to load into (a balfeat ``Backbone`` or a full torchvision ResNet).
        state: weights in the module's key names (e.g. from :func:`load_backbone_state`).
        allow_missing: prefixes of module keys that may be missing (the classifier ``fc.``).
        strict: raise on any other mismatch; otherwise load what fits and report.
        source: name of the weights' origin for messages.

    Raises:
        CheckpointError: (``strict``) keys missing or unexpected, or shapes differ; the message
            lists them and says which architecture the file and the module look like.
    """
    own = backbone.state_dict()
    prefixes = tuple(allow_missing)
    report = LoadReport()
    for k, v in own.items():
        if k not in state:
            (report.allowed_missing if k.startswith(prefixes) else report.missing).append(k)
        elif tuple(state[k].shape) != tuple(v.shape):
            report.shape_mismatch.append(
                f"{k}: {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
            )
    report.unexpected = sorted(k for k in state if k not in own)
    if strict and not report.ok:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} missing keys: {show(report.missing)}")
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} unexpected keys: {show(report.unexpected)}")
        if report.shape_mismatch:
            parts.append(
                f"{len(report.shape_mismatch)} shape mismatches: {show(report.shape_mismatch)}"
            )
        raise CheckpointError(
            f"{source} does not fit the backbone: " + "; ".join(parts) + ". The file looks like "
            f"{describe_architecture(state)}; the model is {describe_architecture(own)}. Pick "
            "the matching --backbone (and --small-images / channels)"
        )
    loadable = {
        k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)
    }
    backbone.load_state_dict(loadable, strict=False)
    return report
