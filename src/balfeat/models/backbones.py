"""Feature extractors: torchvision ResNets without ``fc`` and the CIFAR ResNets of He et al.

- ``resnet18/34/50/101/152``: torchvision's ResNets (He et al., "Deep Residual Learning for Image
  Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385), built with ``weights=None`` (never
  downloads). The classifier ``fc`` is dropped, so ``state_dict()`` keys are exactly torchvision's
  minus ``fc.*`` and a backbone exports to torchvision by adding an ``fc``. ``small_images=True``
  swaps the stem for a 3x3 stride-1 ``conv1`` without max-pool (the usual choice for 28-64 px
  images); ``in_channels=1`` builds a 1-channel ``conv1`` for grayscale images.
- ``resnet8/20/32/56``: the CIFAR ResNets of the same paper (section 4.2: 3 stages of ``n`` basic
  blocks with 16/32/64 channels, ``6n + 2`` layers). Shortcuts use **option A** (parameter-free:
  stride-2 subsampling plus zero-padding of the new channels), as in the paper's CIFAR runs.
  Their stem is always the small-image one; ``small_images`` is ignored.
- ``timm/<name>``: any model of the optional extra ``balfeat[timm]``, built with
  ``timm.create_model(name, num_classes=0, pretrained=False, in_chans=in_channels)`` (never
  downloads); ``out_dim`` is timm's ``num_features``. The module *is* the timm model (its class
  gains :class:`Backbone` as a mix-in), so its ``state_dict()`` keys are exactly timm's and an
  export loads with ``timm.create_model(name, num_classes=0).load_state_dict(sd, strict=True)``.
  ``small_images=True`` sets the first convolution's stride to 1 and drops the max-pool where the
  model has ResNet-style ``conv1``/``maxpool`` stems (no parameter changes shape); other families
  ignore it. Models that timm marks ``fixed_input_size`` (ViTs) are built for ``image_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from balfeat.errors import BalfeatError

TORCHVISION_RESNETS: dict[str, Callable[..., tv_resnet.ResNet]] = {
    "resnet18": tv_resnet.resnet18,
    "resnet34": tv_resnet.resnet34,
    "resnet50": tv_resnet.resnet50,
    "resnet101": tv_resnet.resnet101,
    "resnet152": tv_resnet.resnet152,
}
CIFAR_RESNET_DEPTHS: dict[str, int] = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet56": 56}
BACKBONE_NAMES: tuple[str, ...] = (*TORCHVISION_RESNETS, *CIFAR_RESNET_DEPTHS)
#: ``model.backbone`` values ``timm/<name>`` build ``<name>`` with timm (extra ``balfeat[timm]``).
TIMM_PREFIX = "timm/"


class Backbone(nn.Module):
    """A feature extractor: ``forward(x: (B, C, H, W)) -> (B, out_dim)``."""

    out_dim: int
    name: str


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without ``fc``; its submodules keep torchvision's names.

    Args:
        name: ``resnet18`` ... ``resnet152``.
        small_images: 3x3 stride-1 ``conv1`` and no max-pool (for images of about 28-64 px).
        in_channels: 1 (grayscale) or 3 (RGB).
    """

    def __init__(self, name: str, small_images: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        net = TORCHVISION_RESNETS[name](weights=None)
        self.name = name
        self.out_dim = net.fc.in_features
        if small_images:
            self.conv1: nn.Module = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool: nn.Module = nn.Identity()
        else:
            if in_channels != 3:
                net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
                nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.conv1 = net.conv1
            self.maxpool = net.maxpool
        self.bn1 = net.bn1
        self.relu = net.relu
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = net.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, H, W) -> (B, out_dim)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class CifarBasicBlock(nn.Module):
    """Basic block with an option-A shortcut (subsample + zero-pad channels, no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, or ``x[:, :, ::2, ::2]`` zero-padded to ``planes`` channels."""
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_planes, H, W) -> (B, planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """ResNet-20/32/56 for 32x32 images (works on any size >= 4 px), ``out_dim`` 64.

    Args:
        name: ``resnet20``, ``resnet32`` or ``resnet56``.
        in_channels: 1 (grayscale) or 3 (RGB).
    """

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        n = (CIFAR_RESNET_DEPTHS[name] - 2) // 6
        self.name = name
        self.out_dim = 64
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Sequential] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, H, W) -> (B, 64)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _small_image_stem(net: nn.Module) -> bool:
    """Stride 1 in a ResNet-style stem (``conv1`` conv or sequence, ``maxpool``); no parameter
    changes. Returns whether the model has such a stem."""
    conv1 = getattr(net, "conv1", None)
    if not isinstance(getattr(net, "maxpool", None), nn.Module) or conv1 is None:
        return False
    first = (
        conv1
        if isinstance(conv1, nn.Conv2d)
        else next((m for m in conv1.modules() if isinstance(m, nn.Conv2d)), None)
    )
    if first is None:
        return False
    first.stride = (1, 1)
    net.maxpool = nn.Identity()
    return True


def build_timm_backbone(
    name: str, small_images: bool = False, in_channels: int = 3, image_size: int | None = None
) -> Backbone:
    """``timm.create_model(name, num_classes=0, pretrained=False, in_chans=in_channels)`` as a
    :class:`Backbone` whose ``state_dict()`` keys are timm's (see the module docstring).

    Raises:
        BalfeatError: timm is not installed, or it has no model ``name``.
    """
    try:
        import timm
    except ImportError:
        raise BalfeatError(
            f"backbone {TIMM_PREFIX}{name} needs timm: pip install 'balfeat[timm]' "
            "(or pip install timm)"
        ) from None
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:6]
        raise BalfeatError(
            f"timm has no model {name!r} (model.backbone: {TIMM_PREFIX}{name}); "
            f"similar names: {', '.join(close) or 'none'} (timm.list_models() lists all)"
        )
    kwargs: dict[str, Any] = {}
    cfg = timm.get_pretrained_cfg(name, allow_unregistered=True)
    if image_size and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = image_size
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    if small_images:
        _small_image_stem(net)
    cls = type(f"Timm{type(net).__name__}", (type(net), Backbone), {})
    net.__class__ = cls
    backbone = cast(Backbone, net)
    backbone.name = TIMM_PREFIX + name
    backbone.out_dim = int(cast(int, net.num_features))  # timm types it as a module attribute
    return backbone


def build_backbone(
    name: str, small_images: bool = False, in_channels: int = 3, image_size: int | None = None
) -> Backbone:
    """Build a randomly initialised backbone (never downloads weights).

    Args:
        name: one of ``BACKBONE_NAMES``, or ``timm/<name>`` (extra ``balfeat[timm]``).
        small_images: small-image stem for the torchvision ResNets (ignored for CIFAR ResNets;
            for timm, see the module docstring).
        in_channels: 1 or 3.
        image_size: input size, used only by timm models of a fixed input size (ViTs).

    Returns:
        A ``Backbone`` with ``out_dim`` (512 for resnet18/34, 2048 for resnet50+, 64 for CIFAR).

    Raises:
        BalfeatError: unknown name or channel count.
    """
    if in_channels not in (1, 3):
        raise BalfeatError(
            f"backbone in_channels={in_channels} is not supported; use 1 (grayscale) or 3 (RGB)"
        )
    if name.startswith(TIMM_PREFIX):
        return build_timm_backbone(name[len(TIMM_PREFIX) :], small_images, in_channels, image_size)
    if name in TORCHVISION_RESNETS:
        return TorchvisionResNet(name, small_images=small_images, in_channels=in_channels)
    if name in CIFAR_RESNET_DEPTHS:
        return CifarResNet(name, in_channels=in_channels)
    raise BalfeatError(
        f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)} "
        f"(resnet20/32/56 are the small CIFAR ResNets; {TIMM_PREFIX}<name> builds a timm model)"
    )
