"""Atomic checkpoints with keep-last-N rotation.

A checkpoint is a dict (see ``docs/DESIGN.md``): ``model``, ``optimizer``, ``scheduler``,
``scaler``, ``epoch``, ``step``, ``sampler_epoch``, ``rng``, ``config``, ``method``, ``backbone``,
``version``, ``train_counts`` (:mod:`balfeat.engine.train_counts`). :func:`save_checkpoint`
writes it to a temporary file in the same directory, fsyncs
it and renames it over the target with ``os.replace``, so a crash while writing never leaves a
truncated file where a good checkpoint was. With ``keep_last`` it also maintains numbered files
``checkpoint_0003.pth`` (the newest ``keep_last`` are kept) and a ``last.pth`` copy of the newest.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balfeat.atomic import atomic_write_bytes
from balfeat.engine.build import build_method
from balfeat.engine.config import Config
from balfeat.errors import CheckpointError

CHECKPOINT_VERSION = 1
LAST_NAME = "last.pth"
_NUMBERED = re.compile(r"^checkpoint_(\d+)\.pth$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    path = atomic_write_bytes(path, lambda fh: torch.save(obj, fh))
    _fsync_dir(path.parent)
    return path


def numbered_checkpoints(directory: str | Path) -> list[Path]:
    """``checkpoint_NNNN.pth`` files of ``directory``, oldest (lowest number) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NUMBERED.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def save_checkpoint(
    path: str | Path, state: Mapping[str, Any], keep_last: int | None = None
) -> Path:
    """Save ``state`` atomically.

    Args:
        path: target file. When ``keep_last`` is given, ``path`` is a numbered file
            ``DIR/checkpoint_NNNN.pth`` (or a directory, in which case the number is
            ``state["epoch"]``); ``DIR/last.pth`` is updated to the same content and numbered files
            beyond the newest ``keep_last`` are deleted.
        state: the checkpoint dict; ``version`` is added when missing.
        keep_last: how many numbered checkpoints to keep; ``None`` = just write ``path``.

    Returns:
        The path written.
    """
    state = dict(state)
    state.setdefault("version", CHECKPOINT_VERSION)
    path = Path(path)
    if keep_last is None:
        return atomic_save(state, path)
    if keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1, got {keep_last}")
    if path.is_dir() or path.suffix == "":
        path = path / f"checkpoint_{int(state.get('epoch', 0)):04d}.pth"
    atomic_save(state, path)
    last = path.parent / LAST_NAME
    tmp = last.with_name(LAST_NAME + ".tmp")
    # ``last.pth`` is a full copy (links do not survive copying the run directory around).
    shutil.copyfile(path, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, last)
    _fsync_dir(path.parent)
    for old in numbered_checkpoints(path.parent)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def find_last_checkpoint(directory: str | Path) -> Path | None:
    """``DIR/last.pth`` when present, else the newest numbered checkpoint, else None."""
    directory = Path(directory)
    last = directory / LAST_NAME
    if last.is_file():
        return last
    numbered = numbered_checkpoints(directory)
    return numbered[-1] if numbered else None


def resolve_checkpoint(path: str | Path, *, option: str = "--checkpoint", hint: str = "") -> Path:
    """The checkpoint ``path`` names: a file as it is, a run folder its newest checkpoint
    (:func:`find_last_checkpoint`: ``last.pth``, else the newest ``checkpoint_NNNN.pth``).

    Every command that takes a checkpoint or a run folder (``balfeat probe --checkpoint``,
    ``run.resume``, a study's own-classifier rows) resolves it here.

    Args:
        path: a checkpoint file or a run folder.
        option: the option or place that gave ``path``, for the error.
        hint: what to do instead, appended to the error.

    Raises:
        CheckpointError: a folder holding no checkpoint.
    """
    p = Path(path)
    if not p.is_dir():
        return p
    found = find_last_checkpoint(p)
    if found is None:
        raise CheckpointError(
            f"{option} {str(path)!r}: the folder holds no checkpoint (last.pth)"
            + (f"; {hint}" if hint else "")
        )
    return found


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    expect_method: str | None = None,
    expect_backbone: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: checkpoint file.
        map_location: where tensors are loaded.
        expect_method: when given, the checkpoint must come from this method (``sl``, ``kcl``...).
        expect_backbone: when given, the checkpoint must have this backbone.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, not a balfeat checkpoint, or from
            another method or backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, pickle errors, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: {err}); it is "
            "truncated or corrupt - resume from an older checkpoint_NNNN.pth in the same directory"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(
            f"{str(path)!r} is not a balfeat training checkpoint (no 'model' entry); to initialise "
            "a backbone from other formats use model.init_checkpoint"
        )
    for what, expected in (("method", expect_method), ("backbone", expect_backbone)):
        got = state.get(what)
        if expected is not None and got is not None and got != expected:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained with {what} {got!r} but this run uses "
                f"{expected!r}; use a checkpoint of the same {what} or another output_dir"
            )
    return state


def load_method(
    cfg: Config, num_classes: int, device: torch.device | str = "cpu", *, hint: str = ""
) -> tuple[nn.Module, Path]:
    """Rebuild the method of ``cfg`` with the weights of the newest checkpoint of its run folder
    (``cfg.run.output_dir``, resolved by :func:`resolve_checkpoint`).

    Args:
        cfg: the run's config (method, backbone and output folder).
        num_classes: classes the method was built for.
        device: where the method goes.
        hint: what to do when there is no checkpoint, appended to the error.

    Returns:
        ``(method in eval mode on device, checkpoint path)``.

    Raises:
        CheckpointError: no checkpoint there, or one of another method or backbone.
    """
    folder = Path(cfg.run.output_dir)
    if not folder.is_dir():
        raise CheckpointError(
            f"run folder {str(folder)!r} does not exist" + (f"; {hint}" if hint else "")
        )
    path = resolve_checkpoint(folder, option="run folder", hint=hint)
    state = load_checkpoint(
        path,
        map_location="cpu",
        expect_method=cfg.method.name,
        expect_backbone=cfg.model.backbone,
    )
    method = build_method(cfg, num_classes)
    method.load_state_dict(state["model"])
    return method.to(device).eval(), path
