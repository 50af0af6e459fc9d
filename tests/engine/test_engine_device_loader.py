"""The on-device data path in the trainer (``data.loader``): chosen for in-memory arrays, exact
mid-epoch resume, sharded batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=96",
    "data.num_classes=4",
    "data.image_size=12",
    "data.channels=1",
    "model.backbone=resnet8",
    "model.small_images=true",
    "method.name=moco_v2",
    "method.K=32",
    "method.dim=8",
    "method.bn_splits=2",
    "optim.batch_size=16",
    "run.device=cpu",
    "run.progress=false",
    "run.log_every=1",
]


def _fit(out: Path, extra: list[str], resume: bool = False) -> Trainer:
    cfg = load_config(None, [*TINY, f"run.output_dir={out}", *extra])
    t = Trainer(cfg, resume=resume)
    t.fit()
    return t


def test_in_memory_data_uses_the_device_loader_and_pil_on_request(tmp_path: Path) -> None:
    a = _fit(tmp_path / "a", ["optim.epochs=1", "run.max_steps=1"])
    assert a.batches.on_device
    b = _fit(tmp_path / "b", ["optim.epochs=1", "run.max_steps=1", "data.loader=pil"])
    assert not b.batches.on_device
    cfg = load_config(
        None, ["data.dataset=imagenet", f"data.root={tmp_path}", "data.loader=device"]
    )
    from balfeat.engine import build

    with pytest.raises(ConfigError, match=r"data\.loader=pil"):
        build.uses_device_loader(cfg, object())  # type: ignore[arg-type]


def test_device_loader_resumes_mid_epoch_exactly(tmp_path: Path) -> None:
    full = _fit(tmp_path / "full", ["optim.epochs=2"])
    cut = tmp_path / "cut"
    _fit(cut, ["optim.epochs=2", "run.max_steps=8"])  # 6 steps/epoch: stops in epoch 2
    resumed = _fit(cut, ["optim.epochs=2"], resume=True)
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in full.history][8:] == [r["loss"] for r in resumed.history]
