"""The method registry: built-in names, lookup errors, and a toy method added from outside."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError
from balfeat.methods import METHODS, Method, get_method, method_names

TOY_MODULE = '''
"""A toy method: mean-squared feature norm; registered by importing this module."""

from typing import Any

import torch
from torch import nn

from balfeat.methods import register


class Toy(nn.Module):
    views = 1
    uses_labels = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.steps_done = 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.backbone(images).pow(2).mean()}

    def after_step(self) -> None:
        self.steps_done += 1


@register("toy_from_temp", views=1)
def build_toy(params: Any, backbone: nn.Module, num_classes: int, seed: int) -> Toy:
    return Toy(backbone)
'''

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=16",
    "data.num_classes=4",
    "data.image_size=16",
    "model.backbone=resnet8",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
]


def test_builtin_methods_are_registered_with_their_views() -> None:
    assert {"sl", "moco_v1", "moco_v2", "kcl"} <= set(method_names())
    assert get_method("sl").views == 1
    assert get_method("kcl").views == 2 and get_method("kcl").prefill_by_default
    assert not get_method("moco_v2").prefill_by_default


def test_unknown_method_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'kcl'"):
        load_config(None, ["method.name=kcll"])


@pytest.mark.parametrize("name", ["sl", "moco_v1", "moco_v2", "kcl"])
def test_build_method_is_a_lookup_that_fulfils_the_protocol(name: str) -> None:
    cfg = load_config(None, [*TINY, f"method.name={name}", "method.K=16", "method.bn_splits=2"])
    method = build.build_method(cfg, num_classes=4)
    assert isinstance(method, Method)
    assert method.views == get_method(name).views


def test_toy_method_from_a_temp_module_trains_a_step(tmp_path: Path) -> None:
    (tmp_path / "toy_method_plugin.py").write_text(textwrap.dedent(TOY_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("toy_method_plugin")
        cfg = load_config(
            None, [*TINY, "method.name=toy_from_temp", f"run.output_dir={tmp_path / 'run'}"]
        )
        assert cfg.method.views == 1
        trainer = Trainer(cfg)
        summary = trainer.fit()
        assert trainer.step == 1
        assert trainer.method.steps_done == 1  # type: ignore[union-attr]
        assert (tmp_path / "run" / "last.pth").exists()
        saved = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
        assert saved["config"]["method"]["name"] == "toy_from_temp"
        assert summary
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("toy_method_plugin", None)
        METHODS.pop("toy_from_temp", None)
