"""Study overrides of method parameters reach the cells whose method has them, and only those."""

from __future__ import annotations

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
