"""Checkpoints: atomic writes survive a crash mid-write, rotation, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from balfeat.engine import checkpoint as ckpt
from balfeat.engine.checkpoint import (
    find_last_checkpoint,
    load_checkpoint,
    numbered_checkpoints,
    save_checkpoint,
)
from balfeat.errors import CheckpointError


def _state(epoch: int) -> dict[str, Any]:
    return {
        "model": {"w": torch.full((3,), float(epoch))},
        "epoch": epoch,
        "method": "sl",
        "backbone": "resnet18",
    }


def test_crash_during_write_keeps_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pth"
    save_checkpoint(path, _state(1))

    real_save = torch.save

    def crashing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(10)  # a partial file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))


def test_rotation_keeps_last_n_and_last_pointer(tmp_path: Path) -> None:
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, _state(epoch), keep_last=2)
    names = [p.name for p in numbered_checkpoints(tmp_path)]
    assert names == ["checkpoint_0004.pth", "checkpoint_0005.pth"]
    last = find_last_checkpoint(tmp_path)
    assert last is not None and last.name == "last.pth"
    assert load_checkpoint(last)["epoch"] == 5
    assert load_checkpoint(tmp_path / "checkpoint_0004.pth")["version"] == ckpt.CHECKPOINT_VERSION


def test_find_last_falls_back_to_numbered(tmp_path: Path) -> None:
    assert find_last_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, _state(3), keep_last=3)
    (tmp_path / "last.pth").unlink()
    assert find_last_checkpoint(tmp_path) == tmp_path / "checkpoint_0003.pth"


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _state(1), keep_last=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    torch.save({"w": 1}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="not a balfeat training checkpoint"):
        load_checkpoint(tmp_path / "plain.pth")


def test_other_method_or_backbone_rejected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.pth", _state(1))
    assert load_checkpoint(path, expect_method="sl", expect_backbone="resnet18")["epoch"] == 1
    with pytest.raises(CheckpointError, match=r"method 'sl'.*'kcl'"):
        load_checkpoint(path, expect_method="kcl")
    with pytest.raises(CheckpointError, match=r"backbone 'resnet18'.*'resnet50'"):
        load_checkpoint(path, expect_backbone="resnet50")


def test_resolve_checkpoint_a_folder_means_its_newest(tmp_path: Path) -> None:
    f = tmp_path / "any.pth"
    assert ckpt.resolve_checkpoint(f) == f  # a file (even a missing one) is itself
    save_checkpoint(tmp_path / "run", _state(1), keep_last=2)
    save_checkpoint(tmp_path / "run", _state(2), keep_last=2)
    assert ckpt.resolve_checkpoint(tmp_path / "run") == tmp_path / "run" / "last.pth"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"--resume '.*empty': the folder holds no .*; do X"):
        ckpt.resolve_checkpoint(tmp_path / "empty", option="--resume", hint="do X")


def test_load_method_rebuilds_the_run_folders_method(tmp_path: Path) -> None:
    from balfeat.engine.build import build_method
    from balfeat.engine.config import load_config

    cfg = load_config(
        None,
        [
            "method.name=sl",
            "model.backbone=resnet8",
            "data.dataset=synthetic",
            "data.image_size=16",
            f"run.output_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(CheckpointError, match=r"run folder '.*run' does not exist; train first"):
        ckpt.load_method(cfg, 4, hint="train first")
    trained = build_method(cfg, 4)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)
    state = {"model": trained.state_dict(), "method": "sl", "backbone": cfg.model.backbone}
    save_checkpoint(tmp_path / "run", {**state, "epoch": 1}, keep_last=1)
    method, path = ckpt.load_method(cfg, 4)
    assert path == tmp_path / "run" / "last.pth" and not method.training
    for k, v in trained.state_dict().items():
        assert torch.equal(method.state_dict()[k], v), k
    cfg.method.name = "moco_v2"
    with pytest.raises(CheckpointError, match="trained with method 'sl'"):
        ckpt.load_method(cfg, 4)
