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
from tiny_recipes import CONFIGS, MARKER, find_recipe, queue_overrides, recipes

# The reference table's recipes (docs/recipes.yaml); KCL's successors: test_configs_methods.py.
PRETRAIN = recipes("pretrain", table=True)
PROBES = recipes("probe", table=True)
ALL = sorted(CONFIGS.rglob("*.yaml"))
BASES = sorted((CONFIGS / "base").rglob("*.yaml"))
STUDIES = sorted((CONFIGS / "study").glob("*.yaml"))


def _layered(path: Path) -> dict:
    """The merged mapping of a recipe file and its ``defaults:`` layers."""
    from balfeat.typed_config import read_layered_yaml

    out: dict = {}
    for _, data in read_layered_yaml(path):
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = {**out[k], **v}
            else:
                out[k] = v
    return out


# Tiny synthetic data, tiny backbone, small queue, one optimiser step.
TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=32",
    "data.num_classes=4",
    "data.image_size=16",
    "data.num_workers=0",
    "data.train_split=",
    "data.class_set=",
    "model.init_checkpoint=",
    "model.backbone=resnet8",
    "model.small_images=true",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
]


def test_every_recipe_file_is_in_the_table() -> None:
    """Values are checked against docs/recipes.yaml by tests/test_recipes.py; here: configs/ holds
    only base/, pretrain/, probe/ and study/, the table's recipes are found, every base layer is
    used, and every CIFAR-LT ratio recipe is a layer over its (method, dataset) base."""
    table = yaml.safe_load((CONFIGS.parent / "docs" / "recipes.yaml").read_text())
    assert {p.relative_to(CONFIGS).parts[0] for p in ALL} == {"base", "pretrain", "probe", "study"}
    text = "\n".join(p.read_text() for p in ALL)
    assert PRETRAIN and PROBES and STUDIES
    for p in [*PRETRAIN, *PROBES]:
        assert MARKER in p.read_text(), p.name
    for b in BASES:
        assert f"{b.name}" in text.replace(b.read_text(), ""), f"base layer {b.name} is unused"
    cifar = sorted((CONFIGS / "pretrain" / "cifar-lt").glob("*.yaml"))
    assert len(cifar) == 24
    for p in cifar:
        base = p.stem.rsplit("-lt", 1)[0] + "-lt.yaml"
        assert f"defaults: [../../base/cifar-lt/{base}]" in p.read_text(), p.name
        assert len(p.read_text().splitlines()) <= 8, f"{p.name}: a ratio layer, not a copy"
    assert table["recipes"], "the table lists recipes"


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.stem)
def test_pretrain_config_parses(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.backbone == "resnet50" and cfg.optim.batch_size == 256
    assert path.stem.startswith(cfg.method.name + "_") or path.stem.startswith("sl-")


def _distinct_tiny_configs() -> list[tuple[str, list[str]]]:
    """(name, overrides) of the pretrain configs that differ after the tiny overrides."""
    seen: dict[str, str] = {}
    for path in PRETRAIN:
        d = config_to_dict(load_config(path, [*TINY, *queue_overrides(path)]))
        d["run"]["output_dir"] = ""
        key = json.dumps(d, sort_keys=True)
        seen.setdefault(key, str(path))
    return [(p, [*TINY, *queue_overrides(p)]) for p in seen.values()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p, _ in _distinct_tiny_configs()], ids=lambda p: Path(p).stem
)
def test_pretrain_config_runs_one_step(path: str, tmp_path: Path) -> None:
    from balfeat.engine.trainer import Trainer

    cfg = load_config(path, [*TINY, *queue_overrides(path), f"run.output_dir={tmp_path}"])
    summary = Trainer(cfg).fit()
    assert summary["steps"] == 1
    assert np.isfinite(summary["final_loss"])
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize("path", PROBES, ids=lambda p: p.stem)
def test_probe_recipe_is_valid_and_runs_one_epoch(path: Path) -> None:
    from balfeat.classify.probe import ProbeConfig, train_linear_on_features

    recipe = _layered(path)["probe"]
    assert recipe["lr"] == 30.0 and recipe["epochs"] == 100 and recipe["weight_decay"] == 0.0
    assert recipe["batch_size"] == 256 and recipe["milestones"] == [60, 80]
    pre = Path(recipe["checkpoint"]).parent.name
    assert find_recipe("pretrain", pre), "a probe recipe names an existing pretrain recipe"
    # One epoch of the recipe's classifier on tiny random features.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=gen)
    y = torch.arange(24) % 3
    cfg = ProbeConfig(
        epochs=1,
        lr=0.1,
        milestones=tuple(recipe["milestones"]),
        weight_decay=recipe["weight_decay"],
        batch_size=8,
    )
    res = train_linear_on_features(x, y, x, y, 3, cfg)
    assert res.val_logits.shape == (24, 3)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_file_parses(path: Path) -> None:
    from balfeat.study.spec import load_study

    spec, _ = load_study(path)
    assert spec.methods and spec.sets and spec.probes
    if spec.dataset == "image-folder":  # the sets are split files; LT0 is the balanced one
        assert spec.folder.grouping_set in spec.folder.sets
    elif spec.is_job_study:  # CIFAR-LT: the protocol's standard ratios
        assert sorted(spec.sets.values()) == [10.0, 50.0, 100.0]
    else:
        assert min(spec.sets.values()) == 1.0, "an imbalance family starts from a balanced set"
    assert copy.deepcopy(spec).total == spec.total
