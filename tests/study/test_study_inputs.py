"""Study inputs refused before any folder is written: unreachable ratios, bad probe values."""

from __future__ import annotations

import numpy as np
import pytest

from balfeat.errors import ConfigError, DataError
from balfeat.study.cells import StudyData, check_family
from balfeat.study.demo import demo_spec
from balfeat.study.spec import validate_study


def _data(per_class: int = 6000) -> StudyData:
    y = np.repeat(np.arange(10), per_class)
    x = np.zeros((len(y), 8, 8), np.uint8)
    return StudyData(x, y, x[:10], y[:10], [f"c{i}" for i in range(10)])


def test_a_ratio_the_images_cannot_reach_is_refused() -> None:
    spec = demo_spec("unused")
    check_family(spec, _data())  # balanced / 10 / 100 on 4,000 images: reachable
    spec.family.sets = {"balanced": 1.0, "huge": 1e9}
    with pytest.raises(DataError, match=r"family.sets.huge asks for imbalance ratio 1e\+09.*give"):
        check_family(spec, _data())
    spec.family.sets = {"balanced": 1.0, "exp1e4": 1e4}
    with pytest.raises(DataError, match=r"lower the ratio or raise family\.total"):
        check_family(spec, _data())


def test_probe_values_are_checked_with_the_study() -> None:
    spec = demo_spec("unused")
    spec.probes = {"fast": {"epochs": 0}}
    with pytest.raises(ConfigError, match=r"probes\.fast: probe epochs must be >= 1"):
        validate_study(spec)
    spec.probes = {"fast": {"schedule": "linear"}}
    with pytest.raises(ConfigError, match=r"probes\.fast: unknown probe schedule"):
        validate_study(spec)
