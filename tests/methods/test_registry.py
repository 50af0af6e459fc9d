"""The method registry: built-in names, lookup errors, and a toy method added from outside."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from balfeat.engine import build
from balfeat.engine.config import load_config, overrides_for
from balfeat.engine.trainer import Trainer
from balfeat.errors import ConfigError
from balfeat.methods import METHODS, Method, constructor_fields, get_method, method_names

TOY_MODULE = '''
"""A toy method: mean-squared feature norm; registered by importing this module."""

from dataclasses import dataclass, field

import torch
from torch import nn

from balfeat.methods import MethodBase, from_constructor, register
from balfeat.methods.params import MethodParams
from balfeat.typed_config import bounds


@dataclass
class ToyParams(MethodParams):
    name: str = "toy_from_temp"
    scale: float = field(default=1.0, metadata=bounds(gt=0))  # the loss is scale * |f|^2


class Toy(MethodBase):
    views = 1
    uses_labels = False

    def __init__(self, backbone: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.scale = scale
        self.steps_done = 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.scale * self.backbone(images).pow(2).mean()}

    def after_step(self) -> None:
        self.steps_done += 1


register("toy_from_temp", views=1, params=ToyParams)(from_constructor(Toy))
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
    tiny = overrides_for(name, [*TINY, "method.K=16", "method.bn_splits=2"])
    cfg = load_config(None, [*tiny, f"method.name={name}"])
    method = build.build_method(cfg, num_classes=4)
    assert isinstance(method, Method)
    assert method.views == get_method(name).views


def test_toy_method_from_a_temp_module_trains_a_step(tmp_path: Path) -> None:
    (tmp_path / "toy_method_plugin.py").write_text(textwrap.dedent(TOY_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("toy_method_plugin")
        cfg = load_config(
            None,
            [
                *TINY,
                "method.name=toy_from_temp",
                "method.scale=2.5",
                f"run.output_dir={tmp_path / 'run'}",
            ],
        )
        assert cfg.method.views == 1
        with pytest.raises(ConfigError, match="must be > 0"):
            load_config(None, [*TINY, "method.name=toy_from_temp", "method.scale=0"])
        trainer = Trainer(cfg)
        summary = trainer.fit()
        assert trainer.step == 1
        assert trainer.method.steps_done == 1  # type: ignore[union-attr]
        assert trainer.method.scale == 2.5  # type: ignore[union-attr]
        assert (tmp_path / "run" / "last.pth").exists()
        saved = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
        assert saved["config"]["method"]["name"] == "toy_from_temp"
        assert summary
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("toy_method_plugin", None)
        METHODS.pop("toy_from_temp", None)


def test_every_parameter_reaches_its_constructor() -> None:
    from balfeat.methods import check_constructor, constructor_fields

    for name in method_names():
        entry = get_method(name)
        cls = getattr(entry.build, "method_class", None)
        assert cls is not None, f"{name}: built by from_constructor"
        check_constructor(name, cls, entry.params)  # raises on a field the constructor lacks
        # the constructor reads the dataclass it is registered with (or that one's base
        # without further fields): every field reaches it, none is dropped
        assert "params" in inspect.signature(cls).parameters, name
        assert issubclass(entry.params, cls.params_type), name
        assert constructor_fields(entry.params) == constructor_fields(cls.params_type), name


def test_a_setting_is_declared_once_in_its_dataclass() -> None:
    """No built-in constructor restates a setting as an argument with a default of its own."""
    for name in method_names():
        cls = get_method(name).build.method_class  # type: ignore[attr-defined]
        own = set(inspect.signature(cls).parameters) & set(constructor_fields(cls.params_type))
        assert not own, f"{cls.__name__} restates {sorted(own)}; read them from params"
        for base in cls.__mro__:  # nor does a base class between it and MethodBase
            if "__init__" in vars(base) and base.__module__.startswith("balfeat.methods"):
                args = set(inspect.signature(base.__init__).parameters)
                assert not args & {"dim", "K", "m", "T", "mlp"}, base.__name__


def test_a_parameter_the_constructor_lacks_is_refused_at_registration() -> None:
    from balfeat.methods import from_constructor, register
    from balfeat.methods.params import KCLParams
    from balfeat.methods.supcon import SupConBatch

    with pytest.raises(
        ValueError, match=r"\['K', 'm', .*'posk'.* are not arguments of SupConBatch"
    ):
        register("broken_toy", views=2, params=KCLParams)(from_constructor(SupConBatch))
    assert "broken_toy" not in METHODS


def test_each_method_has_only_its_own_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"'moco_v2' has no parameter 'posk'.*belongs to kcl, tsc"
    ):
        load_config(None, ["method.name=moco_v2", "method.posk=3"])
    with pytest.raises(ConfigError, match=r"'sl' has no parameter 'K'"):
        load_config(None, ["method.name=sl", "method.K=16"])
    with pytest.raises(ConfigError, match=r"did you mean 'method.posk'"):
        load_config(None, ["method.name=kcl", "method.pos=3"])
    cfg = load_config(None, ["method.name=kcl", "method.posk=3"])
    assert type(cfg.method).__name__ == "KCLParams" and cfg.method.posk == 3  # type: ignore[attr-defined]


def test_switching_the_method_keeps_the_values_both_have() -> None:
    a = load_config(None, ["method.K=4096", "method.T=0.1", "method.name=kcl"])
    b = load_config(None, ["method.name=kcl", "method.K=4096", "method.T=0.1"])
    assert a.method == b.method and a.method.K == 4096  # type: ignore[attr-defined]
    # a YAML section applies its name first, wherever it stands
    from balfeat.engine.config import Config, merge_mapping

    c = merge_mapping(Config(), {"method": {"posk": 2, "name": "kcl"}}, "a mapping")
    assert c.method.posk == 2  # type: ignore[attr-defined]


def test_a_flat_method_section_of_an_old_checkpoint_still_loads() -> None:
    from balfeat.engine.config import config_from_dict, config_to_dict

    saved = config_to_dict(load_config(None, ["method.name=kcl", "method.posk=2"]))
    saved["method"].update(alpha=0.05, ce_weight=1.0, freeze_backbone=False)  # the old flat keys
    cfg = config_from_dict(saved)
    assert cfg.method.name == "kcl" and cfg.method.posk == 2  # type: ignore[attr-defined]
    assert not hasattr(cfg.method, "alpha")


def test_constructor_and_config_check_the_same_declared_range() -> None:
    """One declaration (the parameter dataclass) behind the config check and the constructor's."""
    from balfeat.errors import BalfeatError
    from balfeat.methods.paco import PaCo
    from balfeat.models.backbones import build_backbone

    with pytest.raises(ConfigError, match=r"method\.alpha must be >= 0, got -1"):
        load_config(None, ["method.name=paco", "method.alpha=-1"])
    bb = build_backbone("resnet8", small_images=True, in_channels=1)
    with pytest.raises(BalfeatError, match=r"PaCo argument alpha must be >= 0, got -1"):
        PaCo(bb, 4, K=16, bn_splits=2, alpha=-1)
    from balfeat.methods.kcl import KCL

    with pytest.raises(BalfeatError, match=r"KCL argument loss_type='v9' is unknown"):
        KCL(bb, K=16, loss_type="v9")
