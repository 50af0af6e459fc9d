"""Backbone export to torchvision and detectron2 formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from balfeat.errors import CheckpointError
from balfeat.models.export import export_detectron2, export_torchvision, to_detectron2_keys


def balfeat_ckpt() -> dict:
    torch.manual_seed(0)
    tv = resnet18().state_dict()
    model = {f"backbone.{k}": v for k, v in tv.items() if not k.startswith("fc.")}
    model["head.weight"] = torch.zeros(10, 512)
    return {"model": model, "epoch": 1, "method": "sl", "backbone": "resnet18"}


def test_export_torchvision_roundtrip(tmp_path: Path) -> None:
    ckpt = balfeat_ckpt()
    info = export_torchvision(ckpt, tmp_path / "bb.pth")
    state = torch.load(tmp_path / "bb.pth", weights_only=True)
    model = resnet18()
    msg = model.load_state_dict(state, strict=False)
    assert set(msg.missing_keys) == {"fc.weight", "fc.bias"} and not msg.unexpected_keys
    torch.testing.assert_close(model.conv1.weight, ckpt["model"]["backbone.conv1.weight"])
    assert info["arch"] == "resnet18"


def test_detectron2_key_names(tmp_path: Path) -> None:
    export_detectron2(balfeat_ckpt(), tmp_path / "bb.pkl")
    with open(tmp_path / "bb.pkl", "rb") as fh:
        obj = pickle.load(fh)
    assert obj["__author__"] == "balfeat" and obj["matching_heuristics"] is True
    keys = set(obj["model"])
    for k in (
        "stem.conv1.weight",
        "stem.conv1.norm.running_mean",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.weight",
        "res3.0.shortcut.weight",
        "res3.0.shortcut.norm.bias",
        "res5.1.conv2.norm.running_var",
    ):
        assert k in keys, k
    assert not any("layer" in k or "bn" in k or "num_batches" in k for k in keys)
    assert isinstance(obj["model"]["stem.conv1.weight"], np.ndarray)


def test_detectron2_rejects_cifar_resnet() -> None:
    with pytest.raises(CheckpointError, match="layer4"):
        to_detectron2_keys(
            {
                "conv1.weight": torch.zeros(16, 3, 3, 3),
                "layer1.0.conv1.weight": torch.zeros(16, 16, 3, 3),
            }
        )
