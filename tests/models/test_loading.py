"""Backbone loading from balfeat, MoCo/BalFeat, supervised, classifier-balancing and torchvision
checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet50

from balfeat.errors import CheckpointError
from balfeat.models.loading import (
    infer_architecture,
    load_backbone_state,
    load_into_backbone,
)


@pytest.fixture(scope="module")
def r50_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return resnet50().state_dict()


def moco_checkpoint(tv_state: dict[str, torch.Tensor], mlp: bool = True) -> dict:
    """The key layout facebookresearch/moco and bingykang/BalFeat save."""
    sd: dict[str, torch.Tensor] = {}
    for enc in ("encoder_q", "encoder_k"):
        for k, v in tv_state.items():
            if k.startswith("fc."):
                continue
            sd[f"module.{enc}.{k}"] = v  # shared storage: torch.save writes it once
        if mlp:
            sd[f"module.{enc}.fc.0.weight"] = torch.randn(2048, 2048)
            sd[f"module.{enc}.fc.0.bias"] = torch.zeros(2048)
            sd[f"module.{enc}.fc.2.weight"] = torch.randn(128, 2048)
            sd[f"module.{enc}.fc.2.bias"] = torch.zeros(128)
        else:
            sd[f"module.{enc}.fc.weight"] = torch.randn(128, 2048)
            sd[f"module.{enc}.fc.bias"] = torch.zeros(128)
    sd["module.queue"] = torch.randn(128, 64)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    sd["module.label_queue"] = torch.zeros(64, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": {}}


@pytest.mark.slow
def test_moco_checkpoint_loads_with_exactly_fc_missing(
    r50_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save(moco_checkpoint(r50_state), path)
    state, info = load_backbone_state(path)
    assert info["format"] == "moco" and info["arch"] == "resnet50"
    assert info["small_images"] is False and info["epoch"] == 200
    assert "queue" in info["dropped"] and "label_queue" in info["dropped"]
    model = resnet50()
    msg = model.load_state_dict(state, strict=False)
    assert set(msg.missing_keys) == {"fc.weight", "fc.bias"}
    assert msg.unexpected_keys == []
    report = load_into_backbone(model, state)
    assert report.ok and set(report.allowed_missing) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(model.layer3[2].conv2.weight, r50_state["layer3.2.conv2.weight"])


def test_balfeat_checkpoint(r50_state: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(1)
    tv = resnet18().state_dict()
    model = {f"backbone.{k}": v for k, v in tv.items() if not k.startswith("fc.")}
    model.update({f"backbone_k.{k}": v for k, v in tv.items() if not k.startswith("fc.")})
    model["head.weight"] = torch.zeros(10, 512)
    model["queue.keys"] = torch.zeros(4, 8)
    ckpt = {
        "model": model,
        "epoch": 3,
        "method": "kcl",
        "backbone": "resnet18",
        "config": {"model": {"small_images": False}},
    }
    state, info = load_backbone_state(ckpt, arch="resnet18")
    assert info["format"] == "balfeat" and info["method"] == "kcl"
    assert set(state) == {k for k in tv if not k.startswith("fc.")}
    assert "head.weight" in info["dropped"]


def test_supervised_and_classifier_balancing_and_torchvision() -> None:
    torch.manual_seed(2)
    tv = resnet18().state_dict()
    sup = {"state_dict": {f"module.{k}": v for k, v in tv.items()}}
    s1, i1 = load_backbone_state(sup)
    assert i1["format"] == "supervised" and "fc.weight" in i1["dropped"]
    cb = {
        "state_dict": {
            "feat_model": {f"module.{k}": v for k, v in tv.items() if not k.startswith("fc.")},
            "classifier": {"module.fc.weight": torch.zeros(10, 512)},
        }
    }
    s2, i2 = load_backbone_state(cb)
    assert i2["format"] == "classifier-balancing"
    s3, i3 = load_backbone_state(tv)
    assert i3["format"] == "torchvision" and i3["arch"] == "resnet18"
    assert set(s1) == set(s2) == set(s3) == {k for k in tv if not k.startswith("fc.")}


def test_arch_mismatch_is_reported(r50_state: dict[str, torch.Tensor]) -> None:
    state, _ = load_backbone_state(moco_checkpoint(r50_state, mlp=False))
    with pytest.raises(CheckpointError, match="look like resnet50"):
        load_backbone_state(moco_checkpoint(r50_state, mlp=False), arch="resnet18")
    with pytest.raises(CheckpointError) as err:
        load_into_backbone(resnet18(), state)
    text = str(err.value)
    assert "unexpected keys" in text and "shape mismatches" in text
    assert "layer1.0.conv3.weight" in text  # a bottleneck key resnet18 lacks
    assert "resnet50" in text and "resnet18" in text


def test_infer_architecture_variants() -> None:
    assert infer_architecture(resnet18().state_dict())["arch"] == "resnet18"
    try:
        from balfeat.models.backbones import build_backbone
    except ImportError:
        pytest.skip("balfeat.models.backbones not available")
    small = infer_architecture(
        build_backbone("resnet18", small_images=True, in_channels=1).state_dict()
    )
    assert small["arch"] == "resnet18" and small["small_images"] is True
    assert small["in_channels"] == 1
    assert infer_architecture(build_backbone("resnet20").state_dict())["arch"] == "resnet20"


def test_unreadable_and_unknown_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_backbone_state(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_state(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_backbone_state({"weights": [1, 2]})
