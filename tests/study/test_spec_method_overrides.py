"""Study overrides of method parameters reach the cells whose method has them, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from balfeat.errors import ConfigError
from balfeat.study.demo import demo_spec
from balfeat.study.spec import cell_config, validate_study


def test_a_queue_override_reaches_the_queue_methods_and_skips_sl() -> None:
    spec = demo_spec("unused")
    validate_study(spec, ["method.K=512"])
    assert cell_config(spec, "kcl", ["method.K=512"]).method.K == 512
    assert cell_config(spec, "moco_v2", ["method.K=512"]).method.K == 512
    assert not hasattr(cell_config(spec, "sl", ["method.K=512"]).method, "K")


def test_an_override_no_method_has_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"none of the study's methods .* has the parameter"):
        validate_study(demo_spec("unused"), ["method.alpha=0.1"])
    with pytest.raises(ConfigError, match=r"'method.pos=3'.*none of the study's methods"):
        validate_study(demo_spec("unused"), ["method.pos=3"])


def test_a_cell_finished_by_an_earlier_version_is_not_a_changed_cell(tmp_path: Path) -> None:
    import yaml

    from balfeat.engine.config import config_to_dict
    from balfeat.study.run import _check_cell

    cfg = config_to_dict(cell_config(demo_spec("unused"), "kcl"))
    old = {**cfg, "method": {**cfg["method"], "alpha": 0.05, "freeze_backbone": False}}
    old["optim"] = {k: v for k, v in cfg["optim"].items() if k != "gamma"}  # a key added since
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump({"config": old}))
    # the same run: accepted, and the key it did not write is named (its results may predate it)
    assert _check_cell(tmp_path, {"config": cfg}, "kcl", "balanced") == [
        f"optim.gamma={cfg['optim']['gamma']}"
    ]
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump({"config": cfg}))
    assert _check_cell(tmp_path, {"config": cfg}, "kcl", "balanced") == []  # this version's
    changed = {**cfg, "method": {**cfg["method"], "posk": 2}}
    with pytest.raises(ConfigError, match="was run with another pre-training configuration"):
        _check_cell(tmp_path, {"config": changed}, "kcl", "balanced")
