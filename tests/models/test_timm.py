"""``model.backbone: timm/<name>`` (extra ``balfeat[timm]``): keys, stems, channels, and a
pretrain -> export -> strict timm load -> probe round trip on tiny data (CPU).

Skipped when timm is not installed, except the test of the hint given then."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.cli.main import main
from balfeat.errors import BalfeatError, CheckpointError
from balfeat.models.backbones import build_backbone

# test_resnet: a 0.37 M-parameter ResNet that timm ships for its own tests (num_features 96)
NAME = "test_resnet"


def test_without_timm_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(BalfeatError, match=r"pip install 'balfeat\[timm\]'"):
        build_backbone(f"timm/{NAME}")


def test_timm_backbone_is_the_timm_model() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    bb = build_backbone(f"timm/{NAME}", small_images=False)
    ref = timm.create_model(NAME, num_classes=0, pretrained=False)
    assert isinstance(bb, type(ref)) and bb.name == f"timm/{NAME}"
    assert bb.out_dim == ref.num_features == 96
    assert list(bb.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(bb.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    bb.eval(), ref.eval()
    assert bb(x).shape == (2, 96)
    assert torch.equal(bb(x), ref(x))


def test_timm_small_images_and_channels() -> None:
    pytest.importorskip("timm")
    big = build_backbone(f"timm/{NAME}", small_images=False, in_channels=1)
    small = build_backbone(f"timm/{NAME}", small_images=True, in_channels=1)
    shapes = {k: v.shape for k, v in big.state_dict().items()}
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes  # same keys, shapes
    assert next(iter(small.state_dict().values())).shape[1] == 1  # 1 input channel
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert small.conv1[0].stride == (1, 1) and big.conv1[0].stride == (2, 2)
    assert small(torch.randn(2, 1, 16, 16)).shape == (2, 96)


def test_timm_fixed_size_model_takes_the_image_size() -> None:
    pytest.importorskip("timm")
    vit = build_backbone("timm/test_vit", in_channels=1, image_size=32)
    assert vit(torch.randn(2, 1, 32, 32)).shape == (2, vit.out_dim)


def test_unknown_timm_name_is_refused() -> None:
    pytest.importorskip("timm")
    with pytest.raises(BalfeatError, match="timm has no model 'no_such_net'"):
        build_backbone("timm/no_such_net")


def _image_folder(root: Path) -> dict[str, Path]:
    """3 classes of 32x32 RGB images (class = brightest channel) with split files."""
    rng = np.random.default_rng(1)
    splits = {}
    for part, per_class in (("train", (6, 3, 2)), ("val", (2, 2, 2))):
        lines = []
        for label, n in enumerate(per_class):
            folder = root / part / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, size=(32, 32, 3), dtype=np.uint8)
                pixels[..., label] += 160
                Image.fromarray(pixels).save(folder / f"{i}.png")
                lines.append(f"{part}/c{label}/{i}.png {label}")
        splits[part] = root / f"{part}.txt"
        splits[part].write_text("\n".join(lines) + "\n")
    return splits


@pytest.mark.slow
def test_timm_pretrain_export_strict_load_and_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timm = pytest.importorskip("timm")
    run = tmp_path / "run"
    pretrain = [
        "pretrain", "--quiet", "data.dataset=synthetic", "data.synthetic_size=32",
        "data.num_classes=3", "data.channels=3", "data.image_size=32", "data.augmentation=none",
        f"model.backbone=timm/{NAME}", "model.small_images=false", "method.name=sl",
        "optim.batch_size=8", "optim.epochs=1", "run.max_steps=2", "run.device=cpu",
        f"run.output_dir={run}",
    ]  # fmt: skip
    assert main(pretrain) == 0

    out = tmp_path / "backbone.pth"
    assert main(["export", str(run), "--out", str(out)]) == 0  # a run folder: its last.pth
    assert "a timm state dict" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    net = timm.create_model(NAME, num_classes=0, pretrained=False)
    net.load_state_dict(state, strict=True)

    trained = torch.load(run / "last.pth", weights_only=False)["model"]
    own = build_backbone(f"timm/{NAME}", small_images=False)
    own.load_state_dict({k[len("backbone.") :]: v for k, v in trained.items() if "backbone." in k})
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in own.state_dict().items())
    x = torch.randn(4, 3, 32, 32)
    net.eval(), own.eval()
    assert torch.equal(net(x), own(x))  # identical features

    splits = _image_folder(tmp_path / "img")
    probe_out = tmp_path / "probe"
    probe = [
        "probe", "--checkpoint", str(run), "--dataset", "imagenet",
        "--data-root", str(tmp_path / "img"), "--train-split", str(splits["train"]),
        "--val-split", str(splits["val"]), "--image-size", "32", "--epochs", "2",
        "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(probe_out),
    ]  # fmt: skip
    assert main(probe) == 0
    res = json.loads((probe_out / "results.json").read_text())
    assert res["backbone"] == f"timm/{NAME}" and 0.0 <= res["top1"] <= 100.0


@pytest.mark.slow
def test_timm_backbone_in_a_momentum_method(tmp_path: Path) -> None:
    """KCL (momentum encoder, split BatchNorm, queue) trains a step on a timm backbone."""
    pytest.importorskip("timm")
    from balfeat.engine.config import load_config, overrides_for
    from balfeat.engine.trainer import Trainer

    tiny = [
        "method.name=kcl", "data.dataset=synthetic", "data.synthetic_size=32",
        "data.num_classes=4", "data.image_size=16", f"model.backbone=timm/{NAME}",
        "method.K=16", "method.dim=8", "method.bn_splits=2", "optim.batch_size=8",
        "optim.epochs=1", "run.max_steps=1", "run.progress=false", "run.device=cpu",
        f"run.output_dir={tmp_path}",
    ]  # fmt: skip
    trainer = Trainer(load_config(None, overrides_for("kcl", tiny)))
    summary = trainer.fit()
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])
    assert trainer.method.backbone.name == f"timm/{NAME}"


def test_timm_checkpoint_keeps_head_norm_and_names_its_arch() -> None:
    """ConvNeXt's ``head.norm`` belongs to timm's backbone (num_classes=0): never dropped."""
    timm = pytest.importorskip("timm")
    from balfeat.models.loading import load_backbone_state

    bb = build_backbone("timm/test_convnext", small_images=False)
    model = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    model["head.weight"] = torch.zeros(4, bb.out_dim)  # the method's classifier: dropped
    config = {
        "model": {"backbone": "timm/test_convnext", "in_channels": 0},
        "data": {"channels": 3},
    }
    state, info = load_backbone_state({"model": model, "config": config})
    assert "head.norm.weight" in state and info["dropped"] == ["head.weight"]
    assert (info["arch"], info["in_channels"]) == ("timm/test_convnext", 3)
    timm.create_model("test_convnext", num_classes=0).load_state_dict(state, strict=True)
    with pytest.raises(CheckpointError, match="expected a resnet18 backbone"):
        load_backbone_state({"model": model, "config": config}, "resnet18")
