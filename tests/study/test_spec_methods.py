"""A study's ``methods`` entries are typed (:class:`StudyMethod`): pre-training config sections
merged over ``base``, a key that is not a section refused as the file is read, and a bad value
refused when the spec is validated, naming the study file and the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_study import TINY_STUDY

from balfeat.errors import ConfigError
from balfeat.study.spec import (
    StudyMethod,
    cell_config,
    load_study,
    study_from_mapping,
    validate_study,
)


def _write(tmp_path: Path, methods: dict[str, object]) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDY, "methods": methods}, sort_keys=False))
    return path


def test_entries_are_study_methods_whose_sections_reach_the_cell_config(tmp_path: Path) -> None:
    spec, _ = load_study(_write(tmp_path, TINY_STUDY["methods"]))
    moco = spec.methods["moco_v2"]
    assert isinstance(moco, StudyMethod) and moco.files == []
    assert moco.sections() == {
        "data": {"augmentation": "supervised"},
        "method": {"name": "moco_v2", "K": 32, "dim": 16, "bn_splits": 2},
    }
    cfg = cell_config(spec, "moco_v2")
    assert (cfg.method.name, cfg.method.K, cfg.data.augmentation) == ("moco_v2", 32, "supervised")
    assert cfg.optim.batch_size == 16  # from base
    # a spec built in Python is typed the same way, an empty entry as no section
    built = study_from_mapping({**TINY_STUDY, "methods": {"sl": None, **TINY_STUDY["methods"]}})
    assert all(isinstance(m, StudyMethod) for m in built.methods.values())
    assert built.methods["sl"].sections() == {
        "method": {"name": "sl"},
        "data": {"augmentation": "none"},
    }


def test_defaults_may_name_one_file_or_a_list(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: {name: sl}\noptim: {momentum: 0.8}\n")
    for defaults in (str(recipe), [str(recipe)]):
        spec, _ = load_study(_write(tmp_path, {"mine": {"defaults": defaults}}))
        assert spec.methods["mine"].files == [str(recipe)]
        cfg = cell_config(spec, "mine")
        assert (cfg.method.name, cfg.optim.momentum, cfg.optim.batch_size) == ("sl", 0.8, 16)


def test_a_key_that_is_no_section_is_refused_with_the_file_and_closest_key(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, {"sl": {"method": {"name": "sl"}, "optm": {"epochs": 1}}})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    text = str(err.value)
    assert "'methods.sl.optm'" in text and str(path) in text and "'methods.sl.optim'" in text


def test_a_bad_pretraining_key_names_the_study_file_and_the_entry(tmp_path: Path) -> None:
    path = _write(tmp_path, {"sl": {"method": {"name": "sl"}, "optim": {"epoch": 1}}})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    text = str(err.value)
    assert f"study file {path}, methods.sl" in text and "'optim.epochs'" in text
    # a value the pre-training config refuses after merging: the entry is named too
    path = _write(tmp_path, {"sl": {"method": {"name": "sl"}, "optim": {"milestones": [5, 3]}}})
    with pytest.raises(ConfigError, match=rf"study file {path}, methods\.sl: .*milestones"):
        load_study(path)


def test_an_entry_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'methods\.sl' in study is a section; give a mapping"):
        study_from_mapping({**TINY_STUDY, "methods": {"sl": ["method", "sl"]}})
    spec = study_from_mapping(TINY_STUDY)
    spec.methods = {"sl": ["method", "sl"]}  # type: ignore[dict-item]  (set in Python)
    with pytest.raises(ConfigError, match=r"methods\.sl must be a mapping of pre-training"):
        validate_study(spec)
