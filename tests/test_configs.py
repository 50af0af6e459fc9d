"""Every shipped config parses, holds the reference values, and runs one step on tiny data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from balfeat.engine.config import config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL = sorted(CONFIGS.glob("*.yaml"))
PROBES = [p for p in ALL if p.name.startswith("probe_")]
STUDIES = [p for p in ALL if p.name.startswith("study_")]
PRETRAIN = [p for p in ALL if p not in PROBES and p not in STUDIES]

# Tiny synthetic data, tiny backbone, small queue, one optimiser step.
TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=32",
    "data.num_classes=4",
    "data.image_size=16",
    "data.num_workers=0",
    "data.train_split=",
    "data.class_set=",
    "model.backbone=resnet8",
    "model.small_images=true",
    "method.K=16",
    "method.bn_splits=2",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
]


def test_there_are_configs_for_every_recipe() -> None:
    names = {p.stem for p in ALL}
    for method, sched in (("sl", "cos"), ("moco_v1", "step"), ("moco_v2", "cos")):
        for s in ("lt0", "lt2", "lt4", "lt6", "lt8", "lt"):
            stem = f"{method}_resnet50_b256-{sched}-200e_imagenet-{s}"
            assert stem in names
            assert f"probe_{stem}" in names
    assert "kcl_resnet50_b256-cos-200e_imagenet-lt" in names
    for method in ("sl", "moco_v2", "kcl"):
        sched = "cos"
        stem = f"{method}_resnet50_b256-{sched}-200e_imagenet-lt-clsset1"
        assert stem in names
        assert f"probe_{stem}_on-clsset1" in names
        assert f"probe_{stem}_on-clsset1-comp" in names


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.stem)
def test_pretrain_config_parses_with_reference_values(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.optim.batch_size == 256 and cfg.optim.epochs == 200
    assert cfg.model.backbone == "resnet50"
    name = cfg.method.name
    assert path.stem.startswith(name + "_")
    if name == "moco_v1":
        assert (cfg.method.T, cfg.method.mlp, cfg.optim.schedule) == (0.07, False, "step")
        assert cfg.optim.milestones == [120, 160]
    if name in ("moco_v1", "moco_v2"):
        assert (cfg.optim.base_lr, cfg.optim.weight_decay) == (0.03, 1e-4)
        assert (cfg.method.K, cfg.method.m) == (65536, 0.999)
    if name == "moco_v2":
        assert (cfg.method.T, cfg.method.mlp, cfg.optim.schedule) == (0.2, True, "cosine")
        assert cfg.data.augmentation == "moco_v2"
    if name == "kcl":
        assert cfg.method.posk == 6 and cfg.data.augmentation == "supervised"
    if name == "sl":
        assert cfg.optim.base_lr == 0.1 and cfg.data.augmentation == "supervised"
    split = Path(cfg.data.train_split).name
    if "clsset1" in path.stem:
        assert Path(cfg.data.class_set).name == "imagenet_clsset1.txt"
    else:
        lt = path.stem.rsplit("imagenet-", 1)[1]
        expected = "imagenet_100k_train.txt" if lt == "lt0" else f"imagenet_{lt}_train.txt"
        assert split == (expected if lt != "lt" else "ImageNet_LT_train.txt")


def _distinct_tiny_configs() -> list[tuple[str, list[str]]]:
    """(name, overrides) of the pretrain configs that differ after the tiny overrides."""
    seen: dict[str, str] = {}
    for path in PRETRAIN:
        d = config_to_dict(load_config(path, TINY))
        d["run"]["output_dir"] = ""
        key = json.dumps(d, sort_keys=True)
        seen.setdefault(key, str(path))
    return [(p, TINY) for p in seen.values()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p, _ in _distinct_tiny_configs()], ids=lambda p: Path(p).stem
)
def test_pretrain_config_runs_one_step(path: str, tmp_path: Path) -> None:
    from balfeat.engine.trainer import Trainer

    cfg = load_config(path, [*TINY, f"run.output_dir={tmp_path}"])
    summary = Trainer(cfg).fit()
    assert summary["steps"] == 1
    assert np.isfinite(summary["final_loss"])
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize("path", PROBES, ids=lambda p: p.stem)
def test_probe_recipe_is_valid_and_runs_one_epoch(path: Path) -> None:
    from balfeat.classify.probe import ProbeConfig, train_linear_on_features
    from balfeat.cli.main import build_parser

    recipe = yaml.safe_load(path.read_text())["probe"]
    args: list[str] = []
    for key, value in recipe.items():
        opt = "--" + key.replace("_", "-")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        args += [opt, str(value)]
    ns = build_parser().parse_args(["probe", *args])
    assert ns.lr == 30.0 and ns.epochs == 100 and ns.weight_decay == 0.0
    assert ns.batch_size == 256
    assert [int(m) for m in ns.milestones.split(",")] == [60, 80]
    pre = path.stem.removeprefix("probe_").split("_on-")[0]
    assert (CONFIGS / f"{pre}.yaml").is_file(), "a probe recipe names an existing pretrain recipe"
    assert Path(ns.checkpoint).parent.name == pre
    # One epoch of the recipe's classifier on tiny random features.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=gen)
    y = torch.arange(24) % 3
    cfg = ProbeConfig(
        epochs=1,
        lr=0.1,
        milestones=tuple(int(m) for m in ns.milestones.split(",")),
        weight_decay=ns.weight_decay,
        batch_size=8,
    )
    res = train_linear_on_features(x, y, x, y, 3, cfg)
    assert res.val_logits.shape == (24, 3)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_file_parses(path: Path) -> None:
    from balfeat.study.spec import load_study

    spec, _ = load_study(path)
    assert spec.methods and spec.sets and spec.probes
    assert min(spec.sets.values()) == 1.0, "an imbalance family starts from a balanced set"
    assert copy.deepcopy(spec).total == spec.total
