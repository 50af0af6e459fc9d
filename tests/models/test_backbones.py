"""build_backbone: torchvision key compatibility, stems, channels, CIFAR ResNets."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from balfeat.errors import BalfeatError
from balfeat.models.backbones import build_backbone


def test_resnet18_keys_are_torchvision_minus_fc_and_loads() -> None:
    bb = build_backbone("resnet18")
    tv = resnet18(weights=None)
    tv_keys = {k for k in tv.state_dict() if not k.startswith("fc.")}
    assert set(bb.state_dict()) == tv_keys
    bb.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    tv.eval()
    bb.eval()
    x = torch.randn(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    torch.testing.assert_close(bb(x), tv(x))
    assert bb.out_dim == 512


@pytest.mark.parametrize("channels", [1, 3])
def test_small_image_stem_and_channels(channels: int) -> None:
    bb = build_backbone("resnet18", small_images=True, in_channels=channels)
    assert tuple(bb.state_dict()["conv1.weight"].shape) == (64, channels, 3, 3)
    out = bb(torch.randn(2, channels, 16, 16))
    assert out.shape == (2, 512)
    big = build_backbone("resnet18", in_channels=channels)
    assert tuple(big.state_dict()["conv1.weight"].shape) == (64, channels, 7, 7)


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_cifar_resnets(name: str, blocks: int) -> None:
    bb = build_backbone(name, in_channels=1)
    assert bb.out_dim == 64
    assert len(bb.layer1) == blocks  # type: ignore[arg-type]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in bb.modules())
    assert convs == 6 * blocks + 1  # 6n convs + stem; +1 (the fc) makes 6n + 2 layers
    assert bb(torch.randn(3, 1, 8, 8)).shape == (3, 64)


def test_resnet50_out_dim() -> None:
    assert build_backbone("resnet50").out_dim == 2048


def test_unknown_backbone_lists_names() -> None:
    with pytest.raises(BalfeatError, match=r"resnet18.*resnet56"):
        build_backbone("vgg16")
    with pytest.raises(BalfeatError, match="in_channels"):
        build_backbone("resnet18", in_channels=2)
