"""The resume policy: which checkpoint ``--resume`` means, what must match, what is loaded.

A resumed run continues the saved schedule, data, seed and method exactly. :func:`resume_path`
turns ``--resume`` into a checkpoint file; :func:`load_for_resume` reads it, refuses one of
another method, backbone, shape or config (:func:`check_resume_config`, :func:`shape_mismatch`)
and loads the method's weights. The trainer then restores its optimiser, schedule, scaler,
position and random streams from the returned state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balfeat.engine.checkpoint import find_last_checkpoint, load_checkpoint, resolve_checkpoint
from balfeat.engine.config import Config, config_to_dict
from balfeat.errors import CheckpointError, ConfigError

log = logging.getLogger("balfeat.engine")

#: Config keys that may change when a run is resumed: where and how it runs, not what it learns.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "run.device",
    "run.progress",
    "run.log_every",
    "run.keep_last",
    "run.save_every_steps",
    "run.max_steps",
    "run.output_dir",
    "run.timeout_s",
    "run.detect_anomaly",
    "run.overwrite",
    "run.tensorboard",
    "run.wandb",
    "run.knn_every",
    "run.compile",
    "run.channels_last",
    "data.num_workers",
    "data.root",
    "data.skip_bad_images",
    "data.decode",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume with a config that changes what the run learns.

    A resumed run continues the saved schedule, data, seed and method exactly; changing any of
    them mid-run (e.g. ``optim.epochs``, whose cosine schedule the optimizer already followed)
    would silently train something that is neither run. Only the keys in
    :data:`RESUMABLE_CHANGES` (device, logging, checkpointing) may differ.

    Raises:
        ConfigError: listing every key that differs, with the saved and the new value.
    """
    old, new = _flatten(saved), _flatten(now)
    diff = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in RESUMABLE_CHANGES and k in old and k in new and old[k] != new[k]
    ]
    if diff:
        raise ConfigError(
            f"cannot resume {str(path)!r} with a different config ({'; '.join(diff)}); resume "
            "with the run's own config.yaml, or start a new run in another run.output_dir"
        )


def shape_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Say which tensors of a checkpoint differ in shape from the model's ("" when none).

    A classifier of another size (``head.weight`` with 3 rows against 4) means the training data
    now has another number of classes than when the checkpoint was written.
    """
    diffs = [
        (k, tuple(v.shape), tuple(current[k].shape))
        for k, v in saved.items()
        if k in current and hasattr(v, "shape") and tuple(v.shape) != tuple(current[k].shape)
    ]
    if not diffs:
        return ""
    key, old, new = diffs[0]
    text = f"{key} has shape {old} in the checkpoint but {new} here"
    if len(diffs) > 1:
        text += f" (and {len(diffs) - 1} more tensor(s))"
    if key.endswith("weight") and len(old) == 2 and old[1:] == new[1:] and old[0] != new[0]:
        text += (
            f": the checkpoint was trained on {old[0]} classes and the training data now has "
            f"{new[0]} (did the split file or data.class_set change?); resume with the data it "
            "was trained on, or start a new run"
        )
    return text


def resume_path(resume: bool | str | Path | None, output_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` means, or ``None`` to start fresh.

    ``None``/``False``: start fresh. ``True``: ``output_dir``'s newest checkpoint, or fresh (with
    a warning) when it has none. A folder: its newest checkpoint. A file: that file.

    Raises:
        CheckpointError: a folder given explicitly holds no checkpoint.
    """
    if not resume:
        return None
    if resume is True:
        found = find_last_checkpoint(output_dir)
        if found is None:
            log.warning("no checkpoint in %s; starting from scratch", output_dir)
        return found
    return resolve_checkpoint(resume, option="--resume")  # a run folder: its newest


def load_for_resume(
    path: Path, cfg: Config, method: nn.Module, map_location: torch.device
) -> dict[str, Any]:
    """Read checkpoint ``path``, check it fits ``cfg`` and load its weights into ``method``.

    Returns:
        The checkpoint dict (optimizer, scheduler, scaler, epoch, step, batch_in_epoch, rng).

    Raises:
        CheckpointError: unreadable, of another method or backbone, or a tensor of another shape.
        ConfigError: the saved config differs in a key outside :data:`RESUMABLE_CHANGES`.
    """
    state = load_checkpoint(
        path,
        map_location=map_location,
        expect_method=cfg.method.name,
        expect_backbone=cfg.model.backbone,
    )
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as err:
        # a tensor of another shape, said in one sentence (a head of another number of
        # classes: the data changed), rather than torch's list of every mismatch
        said = shape_mismatch(state["model"], method.state_dict()) or str(err)
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this method/architecture: {said}"
        ) from None
    check_resume_config(state.get("config") or {}, config_to_dict(cfg), path)
    return state


def rank_rng(state: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s saved random states (an older single-process checkpoint holds a dict)."""
    rngs = state.get("rng", [])
    if isinstance(rngs, dict):
        rngs = [rngs]
    return rngs[rank] if rank < len(rngs) else None
