"""The recipes of KCL's successors (configs/methods/, issue 15): authors' values, a named source,
and one training step on tiny data.

They live in ``configs/methods/`` (not in ``configs/``, whose files are the rows of the KCL
reference table ``docs/recipes.yaml``) until that table grows rows for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from balfeat.engine.config import load_config
from tiny_recipes import queue_overrides

DIR = Path(__file__).resolve().parents[1] / "configs" / "methods"
RECIPES = sorted(DIR.glob("*.yaml"))

# docs/methods-recipes.md: the authors' values each recipe must hold (ImageNet-LT / iNat).
PUBLISHED = {
    "supcon": {"K": 65536, "T": 0.2},  # the KCL recipe's values (no published SupCon-queue run)
    "tsc": {"posk": 6, "target_weight": 0.2, "dim": 128, "T": 0.07, "K": 65536},
    "paco": {"K": 8192, "T": 0.2, "alpha": 0.05, "beta": 1.0, "gamma": 1.0},
    "gpaco": {"T": 0.2, "alpha": 0.045, "beta": 1.0, "gamma": 1.0},
    "bcl": {"T": 0.07, "ce_weight": 1.0, "bcl_weight": 0.35, "dim": 1024},
}
# PaCo's CIFAR-100-LT scripts (LT/sh/CIFAR100_train_imb{0.01,0.02,0.1}.sh), by imbalance ratio.
PUBLISHED_CIFAR = {
    ("paco", 100): {"K": 1024, "T": 0.05, "alpha": 0.02, "dim": 64, "base_lr": 0.04},
    ("paco", 50): {"K": 1024, "T": 0.05, "alpha": 0.02, "dim": 64, "base_lr": 0.04},
    ("paco", 10): {"K": 1024, "T": 0.05, "alpha": 0.01, "dim": 32, "base_lr": 0.1},
}

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=32",
    "data.num_classes=4",
    "data.imbalance_ratio=1",  # the CIFAR-LT recipes' ratios would empty 8-image classes
    "data.image_size=16",
    "data.num_workers=0",
    "data.train_split=",
    "model.backbone=resnet8",
    "model.small_images=true",
    "optim.batch_size=8",
    "optim.epochs=1",
    "run.max_steps=1",
    "run.progress=false",
    "run.device=cpu",
]


def test_there_are_recipes_for_every_successor() -> None:
    names = {load_config(p).method.name for p in RECIPES}
    assert {"supcon", "tsc", "paco", "gpaco", "bcl"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_names_its_source_and_holds_the_published_values(path: Path) -> None:
    cfg = load_config(path)
    name = cfg.method.name
    assert path.stem.startswith(name + "_" + cfg.model.backbone + "_")
    assert "Source:" in path.read_text(), "every recipe names its source"
    batch, sched, epochs = path.stem.split("_")[2].split("-")  # b{batch}-{sched}-{epochs}e
    assert cfg.optim.batch_size == int(batch.removeprefix("b"))
    assert cfg.optim.epochs == int(epochs.removesuffix("e"))
    assert cfg.optim.schedule == {"cos": "cosine", "step": "step"}[sched]
    if cfg.data.dataset.startswith("cifar"):
        assert cfg.model.backbone == "resnet32" and cfg.data.image_size == 32
        ratio = int(cfg.data.imbalance_ratio)
        assert path.stem.endswith(f"_{cfg.data.dataset}{ratio}")
        expected = PUBLISHED_CIFAR[(name, ratio)]
    else:
        assert cfg.model.backbone == "resnet50"
        expected = PUBLISHED[name]
    for key, value in expected.items():
        section = cfg.optim if key == "base_lr" else cfg.method
        assert getattr(section, key) == value, key
    assert cfg.run.output_dir.endswith(path.stem)


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_one_step(path: Path, tmp_path: Path) -> None:
    from balfeat.engine.trainer import Trainer

    cfg = load_config(path, [*TINY, *queue_overrides(path), f"run.output_dir={tmp_path}"])
    summary = Trainer(cfg).fit()
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])
