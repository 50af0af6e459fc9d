"""torch.compile and bf16 autocast on CPU give the eager float32 loss of a balfeat method.

Tolerances: bf16 has an 8-bit mantissa (relative step 2**-8 ~ 0.4%); through a small ResNet and a
softmax over the queue the loss moves by well under 2%, so bf16 is checked at rtol 2e-2.
torch.compile (inductor) reorders float32 reductions only, checked at rtol 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch

from balfeat.methods.kcl import KCL
from balfeat.methods.moco import MoCo
from balfeat.models.backbones import build_backbone


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("resnet8", small_images=True, in_channels=1)
    kw = dict(dim=32, K=64, m=0.99, T=0.2, mlp=True)
    model = KCL(backbone, posk=2, **kw) if kind == "kcl" else MoCo(backbone, **kw)
    return model.train()


def _batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 1, 28, 28, generator=g) for _ in range(2)]
    return views, torch.arange(16) % 4


def _loss(model: torch.nn.Module, views: list[torch.Tensor], labels: torch.Tensor) -> float:
    return float(model(views, labels)["loss"].detach())


@pytest.mark.parametrize("kind", ["moco", "kcl"])
def test_bf16_autocast_matches_float32(kind: str) -> None:
    model = _model(kind)
    twin = copy.deepcopy(model)
    views, labels = _batch()
    ref = _loss(model, views, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _loss(twin, views, labels)
    assert low == pytest.approx(ref, rel=2e-2)


# torch.compile on CPU is tested once, through the trainer: tests/engine/test_engine_precision.py
