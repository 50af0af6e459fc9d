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


# --- a reader that does what detectron2's DetectionCheckpointer does with a .pkl ----------------
# (detectron2/checkpoint: pickle.load(encoding="latin1"); a dict with "model" and "__author__" is
# taken as is; every value must be a numpy array; with "matching_heuristics" the names are aligned
# to the model's). The expected names are built here from detectron2's ResNet layout (stem.conv1
# + norm, res2..res5, conv1..conv3 + norm, shortcut + norm on a block whose width changes), not
# from balfeat's renaming.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses any class outside numpy/builtins: the file must load without torch or balfeat."""

    def find_class(self, module: str, name: str) -> object:
        if module.split(".")[0] not in {"numpy", "builtins", "copyreg", "_codecs"}:
            raise pickle.UnpicklingError(f"{module}.{name} needed to read the export")
        return super().find_class(module, name)


def d2_read(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as fh:
        data = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    assert isinstance(data, dict) and "model" in data and "__author__" in data
    assert data.get("matching_heuristics") is True
    out = {}
    for k, v in data["model"].items():
        if not isinstance(v, np.ndarray):
            raise ValueError(f"Unsupported type found in checkpoint! {k}: {type(v)}")
        out[k] = torch.as_tensor(v)
    return out


def d2_resnet_layout(depth: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """detectron2 name -> (torchvision name, shape) for a ResNet of ``depth`` (18 or 50)."""
    blocks, bottleneck = {18: ((2, 2, 2, 2), False), 50: ((3, 4, 6, 3), True)}[depth]
    layout: dict[str, tuple[str, tuple[int, ...]]] = {}

    def conv(d2: str, tv_conv: str, tv_bn: str, shape: tuple[int, ...]) -> None:
        layout[f"{d2}.weight"] = (f"{tv_conv}.weight", shape)
        for p in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{d2}.norm.{p}"] = (f"{tv_bn}.{p}", (shape[0],))

    conv("stem.conv1", "conv1", "bn1", (64, 3, 7, 7))
    in_ch = 64
    for s, n in enumerate(blocks):
        width = 64 * 2**s
        out_ch = width * 4 if bottleneck else width
        for b in range(n):
            d2, tv = f"res{s + 2}.{b}", f"layer{s + 1}.{b}"
            c_in = in_ch if b == 0 else out_ch
            if bottleneck:
                conv(f"{d2}.conv1", f"{tv}.conv1", f"{tv}.bn1", (width, c_in, 1, 1))
                conv(f"{d2}.conv2", f"{tv}.conv2", f"{tv}.bn2", (width, width, 3, 3))
                conv(f"{d2}.conv3", f"{tv}.conv3", f"{tv}.bn3", (out_ch, width, 1, 1))
            else:
                conv(f"{d2}.conv1", f"{tv}.conv1", f"{tv}.bn1", (width, c_in, 3, 3))
                conv(f"{d2}.conv2", f"{tv}.conv2", f"{tv}.bn2", (width, width, 3, 3))
            if b == 0 and (c_in != out_ch or s > 0):
                conv(
                    f"{d2}.shortcut",
                    f"{tv}.downsample.0",
                    f"{tv}.downsample.1",
                    (out_ch, c_in, 1, 1),
                )
        in_ch = out_ch
    return layout


@pytest.mark.parametrize("depth", [18, 50])
def test_detectron2_export_loads_back(tmp_path: Path, depth: int) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(depth)
    tv = (resnet18 if depth == 18 else resnet50)().state_dict()
    for v in tv.values():  # distinct values so a swapped tensor is noticed
        if v.is_floating_point():
            v.copy_(torch.randn_like(v))
    ckpt = {"model": {f"backbone.{k}": v for k, v in tv.items() if not k.startswith("fc.")}}
    export_detectron2(ckpt, tmp_path / "r.pkl")
    model = d2_read(tmp_path / "r.pkl")
    layout = d2_resnet_layout(depth)
    assert set(model) == set(layout)
    for d2_name, (tv_name, shape) in layout.items():
        assert tuple(model[d2_name].shape) == shape, d2_name
        torch.testing.assert_close(model[d2_name], tv[tv_name], msg=d2_name)


def _ckpt_of(name: str, small: bool = False, in_channels: int = 3) -> dict:
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    bb = build_backbone(name, small_images=small, in_channels=in_channels)
    return {"model": {f"backbone.{k}": v for k, v in bb.state_dict().items()}}


@pytest.mark.parametrize(
    ("name", "small", "channels", "fragment"),
    [
        ("resnet18", True, 3, "small-image stem"),
        ("resnet20", False, 3, "not one of torchvision's ResNets"),
        ("resnet56", False, 3, "not one of torchvision's ResNets"),
        ("resnet18", False, 1, "1 input channel"),
    ],
)
@pytest.mark.parametrize("fn", [export_torchvision, export_detectron2])
def test_non_torchvision_backbones_are_refused(
    tmp_path: Path, name: str, small: bool, channels: int, fragment: str, fn: object
) -> None:
    assert callable(fn)
    with pytest.raises(CheckpointError, match=fragment) as info:
        fn(_ckpt_of(name, small, channels), tmp_path / "x.out")
    assert "--format backbone" in str(info.value)
    assert not (tmp_path / "x.out").exists()


def test_backbone_format_loads_into_balfeat(tmp_path: Path) -> None:
    from balfeat.models.backbones import build_backbone
    from balfeat.models.export import export_backbone

    ckpt = _ckpt_of("resnet20")
    info = export_backbone(ckpt, tmp_path / "bb.pth")
    assert info["arch"] == "resnet20" and info["format_out"] == "backbone"
    net = build_backbone(info["arch"], small_images=bool(info["small_images"]))
    net.load_state_dict(torch.load(tmp_path / "bb.pth", weights_only=True))


def test_export_refuses_existing_output_and_training_checkpoints(tmp_path: Path) -> None:
    from balfeat.errors import ConfigError

    ckpt = balfeat_ckpt()
    train = tmp_path / "last.pth"
    torch.save({**ckpt, "optimizer": {"state": {}, "param_groups": []}, "step": 3}, train)
    before = train.read_bytes()
    for force in (False, True):
        with pytest.raises(ConfigError, match="checkpoint being exported"):
            export_torchvision(train, train, force=force)
        with pytest.raises(ConfigError, match="training checkpoint"):
            export_torchvision(ckpt, train, force=force)
    assert train.read_bytes() == before
    out = tmp_path / "bb.pth"
    export_torchvision(train, out)
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        export_torchvision(train, out)
    export_torchvision(train, out, force=True)
