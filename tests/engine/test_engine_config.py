"""Config: YAML + overrides, typed checks, closest-key errors, round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from balfeat.engine.config import (
    Config,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from balfeat.errors import ConfigError


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_views() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.method.views == 2
    cfg.method.name = "sl"
    assert cfg.method.views == 1


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    a = _write(tmp_path, "optim:\n  base_lr: 0.1\n  epochs: 5\nmethod:\n  name: sl\n", "a.yaml")
    b = _write(tmp_path, "optim:\n  epochs: 7\n", "b.yaml")
    cfg = load_config(
        [a, b],
        [
            "optim.milestones=[3, 6]",
            "method.name=kcl",
            "data.dataset=fashion-mnist",
            "optim.weight_decay=1e-4",
            "data.balanced=true",
            "run.output_dir=2024",
        ],
    )
    assert cfg.optim.base_lr == 0.1
    assert cfg.optim.epochs == 7
    assert cfg.optim.milestones == [3, 6]
    assert cfg.method.name == "kcl"
    assert cfg.optim.weight_decay == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as text
    assert cfg.data.balanced is True
    assert cfg.run.output_dir == os.path.abspath("2024")  # a path, resolved against the cwd


def test_int_accepted_for_float_and_scaled_lr() -> None:
    cfg = load_config(None, ["optim.base_lr=1", "optim.batch_size=512"])
    assert isinstance(cfg.optim.base_lr, float)
    assert cfg.optim.scaled_lr() == pytest.approx(2.0)


def test_unknown_key_in_file_names_file_and_closest(tmp_path: Path) -> None:
    p = _write(tmp_path, "optim:\n  base_lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "optim.base_lrr" in msg and str(p) in msg and "optim.base_lr" in msg


def test_unknown_override_suggests_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr.*optim\.base_lr"):
        load_config(None, ["optim.lr=0.03"])
    with pytest.raises(ConfigError, match=r"run.output_dir"):
        load_config(None, ["run.outptu_dir=x"])
    with pytest.raises(ConfigError, match="unknown config key 'optimm'"):
        load_config(None, ["optimm=3"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.epochs=1.5", "int"),
        ("optim.epochs=ten", "int"),
        ("data.balanced=3", "bool"),
        ("method.name=simclr", "one of"),
        ("optim.milestones=5", "list of int"),
        ("optim.milestones=[1, x]", "int"),
        ("optim.base_lr=fast", "float"),
    ],
)
def test_wrong_type_names_key_expected_and_got(override: str, expected: str) -> None:
    key, _got = override.split("=")
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert key.split(".")[-1] in msg and expected in msg


def test_wrong_type_in_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "data:\n  balanced: maybe\n")
    with pytest.raises(ConfigError, match=r"data\.balanced.*expected bool.*'maybe'"):
        load_config(p)


def test_section_and_value_misuse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a section"):
        load_config(None, ["optim=3"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["optim.epochs.x=3"])
    with pytest.raises(ConfigError, match=r"section.key=value"):
        load_config(None, ["optim.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_relations_validated() -> None:
    with pytest.raises(ConfigError, match=r"optim.epochs"):
        load_config(None, ["optim.epochs=0"])
    with pytest.raises(ConfigError, match="imbalance_ratio"):
        load_config(None, ["data.imbalance_ratio=0.5"])


def test_round_trip_yaml_and_dict(tmp_path: Path) -> None:
    cfg = load_config(None, ["method.name=kcl", "optim.milestones=[1,2]", "run.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    assert config_to_dict(cfg)["method"]["name"] == "kcl"


CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SECTIONS = {"data", "model", "method", "optim", "run"}


def _pretrain_configs() -> list[Path]:
    found = []
    for p in sorted((CONFIGS / "pretrain").rglob("*.yaml")):
        data = yaml.safe_load(p.read_text())
        keys = set(data) - {"defaults"} if isinstance(data, dict) else set()
        if isinstance(data, dict) and keys <= SECTIONS and "probe" not in data:
            found.append(p)
    return found


def test_every_shipped_pretrain_config_parses() -> None:
    configs = _pretrain_configs()
    if not configs:
        pytest.skip("no configs/ directory with pre-training configs")
    for p in configs:
        cfg = load_config(p, ["data.root=/data"])
        # the file name says the method (sl-2full/sl-crt follow-ups train the SL method)
        assert p.name.startswith(cfg.method.name + "_") or p.name.startswith("sl-"), p


def test_saved_config_with_old_key_names_is_read_under_the_new_ones() -> None:
    from balfeat.engine.config import config_from_dict, config_to_dict

    d = config_to_dict(load_config(None, []))
    d["data"].pop("imbalance_ratio")
    d["data"]["lt_ratio"] = 8.0
    d["data"].pop("repeat")
    d["data"]["bal_repeat"] = 3
    d["model"].pop("init_checkpoint")
    d["method"]["init_checkpoint"] = "x.pth"
    cfg = config_from_dict(d)
    assert cfg.data.imbalance_ratio == 8.0 and cfg.data.repeat == 3
    assert cfg.model.init_checkpoint == "x.pth"


def test_renamed_keys_are_unknown_in_yaml_overrides() -> None:
    with pytest.raises(ConfigError, match="imbalance_ratio"):
        load_config(None, ["data.lt_ratio=4"])
