"""The recipes of KCL's successors (issue 15): authors' values, a named source, and one training
step on tiny data.

They live beside the KCL reference recipes in ``configs/pretrain/<dataset>/`` and
``configs/probe/<dataset>/``; ``docs/recipes.yaml`` names each with its source (``successors``),
their values are checked here. A CIFAR-LT ratio recipe is a layer over its (method, dataset)
base, so the text checks read the file with its layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from balfeat.engine.config import load_config
from tiny_recipes import CONFIGS, find_recipe, queue_overrides, recipe_text, recipes

RECIPES = recipes("pretrain", table=False)
_PROBE_FILES = recipes("probe", table=False)
PROBES = [p for p in _PROBE_FILES if p.name.endswith("_on-lt-test.yaml")]
CIFAR_PROBES = [p for p in _PROBE_FILES if p.name.startswith("probe_cifar-lt_")]
LDAM_PROBES = [p for p in _PROBE_FILES if p.name.startswith("probe-ldam_cifar-lt_")]
INAT_PROBES = [p for p in _PROBE_FILES if p.name.endswith("_on-inat-val.yaml")]

# docs/methods-recipes.md: the authors' values each recipe must hold (ImageNet-LT / iNat).
PUBLISHED = {
    # the TSC authors' SupCon-queue script: main_moco_supcon_imba.py:90,94 defaults, README:56 --mlp
    "supcon": {"K": 65536, "T": 0.07, "mlp": True, "dim": 128},
    "tsc": {"posk": 6, "target_weight": 0.2, "dim": 128, "T": 0.07, "K": 65536},
    # head_bn: PaCo/LT/moco/builder.py:50 and BCL's models/resnext.py:291,301 have a BatchNorm1d
    # in the MLP head, GPaCo/LT/moco/builder.py:47 has none
    # cosine_form: the shifted cosine of PaCo/LT/paco_lt.py:618-629, GPaCo/LT/paco_lt.py:595-606
    # and BCL's main.py:398-409
    "paco": {
        "K": 8192,
        "T": 0.2,
        "alpha": 0.05,
        "beta": 1.0,
        "gamma": 1.0,
        "head_bn": True,
        "cosine_form": "shifted",
    },
    "gpaco": {
        "T": 0.2,
        "alpha": 0.045,
        "beta": 1.0,
        "gamma": 1.0,
        "head_bn": False,
        "head_layers": 2,
        "cosine_form": "shifted",
    },
    "bcl": {
        "T": 0.07,
        "ce_weight": 1.0,
        "bcl_weight": 0.35,
        "dim": 1024,
        "head_bn": True,
        "cosine_classifier": True,
        "cosine_form": "shifted",
    },
}
# CIFAR-LT recipes, by (method, dataset, imbalance ratio): only the values the authors publish
# (docs/methods-recipes.md); the values each header marks as chosen are not pinned here.
_PACO = {  # PaCo/LT/sh/CIFAR100_train_imb{0.01,0.02,0.1}.sh (newest; CIFAR-10-LT reuses them)
    100: {"K": 1024, "T": 0.05, "alpha": 0.01, "dim": 32, "base_lr": 0.1, "head_bn": True},
    50: {"K": 1024, "T": 0.05, "alpha": 0.01, "dim": 32, "base_lr": 0.1, "head_bn": True},
    10: {"K": 1024, "T": 0.05, "alpha": 0.01, "dim": 32, "base_lr": 0.1, "head_bn": True},
}
_BCL = {  # FlamieZhu/Balanced-Contrastive-Learning main.py defaults (no CIFAR script)
    "T": 0.07, "ce_weight": 1.0, "bcl_weight": 0.35, "base_lr": 0.1, "weight_decay": 5e-4,
    "head_bn": True, "cosine_classifier": True,  # --use_norm True
    "cosine_form": "shifted",
}  # fmt: skip
_TSC_SCRIPT = {  # LTH14/targeted-supcon cifar_dirty/main_supcon_imba.py + util.py, with the
    # supplement's published first stage (supp_release.pdf, Appendix A): 1000 epochs, batch 1024,
    # lr 0.5 (base_lr 0.125 * 1024 / 256), cosine; 10 warm-up epochs (their script's large-batch
    # warm-up, main_supcon_imba.py:164-175)
    "T": 0.07, "dim": 128, "base_lr": 0.125, "weight_decay": 1e-4, "schedule": "cosine",
    "warmup_epochs": 10, "epochs": 1000, "batch_size": 1024,
}  # fmt: skip
_PACO_CIFAR_SCHEDULE = {  # PaCo/LT/paco_cifar.py:586-597 (adjust_learning_rate ignores --cos)
    "schedule": "step", "milestones": [321, 361], "warmup_epochs": 10,
    "warmup_inclusive": True,
}  # fmt: skip
# iNaturalist 2018 scripts whose values differ from the method's ImageNet-LT ones.
PUBLISHED_INAT = {  # GPaCo/LT/sh/LT/Inat_train_R50.sh
    "gpaco": {"T": 0.2, "alpha": 0.05, "beta": 1.0, "gamma": 1.0, "base_lr": 0.08,
              "weight_decay": 1e-4, "head_bn": False, "head_layers": 2,
              "cosine_form": "shifted"},
}  # fmt: skip
AUGMENTATION_INAT = {"gpaco": "paco_randcls_sim"}  # --aug randcls_sim
PUBLISHED_CIFAR: dict[tuple[str, str, int], dict[str, object]] = {}
for _ds in ("cifar10-lt", "cifar100-lt"):
    for _r in (100, 50, 10):
        PUBLISHED_CIFAR[("paco", _ds, _r)] = {**_PACO[_r], **_PACO_CIFAR_SCHEDULE}
        PUBLISHED_CIFAR[("bcl", _ds, _r)] = _BCL
        PUBLISHED_CIFAR[("tsc", _ds, _r)] = {**_TSC_SCRIPT, "target_warmup_steps": 0}
        PUBLISHED_CIFAR[("supcon_inbatch", _ds, _r)] = _TSC_SCRIPT
OPTIM_KEYS = {
    "base_lr", "weight_decay", "milestones", "warmup_epochs", "schedule",
    "warmup_inclusive", "epochs", "batch_size", "cosine_form",
}  # fmt: skip
# The authors' views (data.augmentation; docs/methods-recipes.md), by method, for ImageNet-LT /
# iNat and for CIFAR-LT (BCL publishes no CIFAR augmentation: moco_v2 is chosen there).
AUGMENTATION = {
    "paco": "paco_randcls_sim",  # --aug randcls_sim (RandAugment query view)
    "gpaco": "gpaco_randcls_randclsstack",  # --aug randcls_randclsstack
    "bcl": "bcl_randcls_sim",  # RandAugment classifier crop + SimCLR-like contrastive crop
}
AUGMENTATION_CIFAR = {"paco": "paco_cifar_autoaug_sim", "bcl": "moco_v2"}  # --aug cifar100

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


def test_cifar_lt_recipes_cover_both_datasets_and_three_ratios() -> None:
    cifar = {
        (c.method.name, c.data.dataset, int(c.data.imbalance_ratio))
        for c in (load_config(p) for p in RECIPES)
        if c.data.dataset.startswith("cifar")
    }
    for name in ("bcl", "tsc", "paco", "supcon_inbatch"):
        for ds in ("cifar10-lt", "cifar100-lt"):
            for ratio in (100, 50, 10):
                assert (name, ds, ratio) in cifar, (name, ds, ratio)


def test_every_successor_has_large_scale_recipes_each_with_its_probe() -> None:
    """ImageNet-LT and iNaturalist 2018 pre-training for every successor, each with a probe recipe
    whose checkpoint is that recipe's output (issue 15: "each with its probe")."""
    large = {
        (c.method.name, c.data.dataset): p.stem
        for p, c in ((p, load_config(p)) for p in RECIPES)
        if not c.data.dataset.startswith("cifar")
    }
    probes = {Path(p).name for p in PROBES + INAT_PROBES}
    for name in ("supcon", "tsc", "paco", "gpaco", "bcl"):
        for ds, suffix in (("imagenet", "_on-lt-test"), ("inat", "_on-inat-val")):
            assert (name, ds) in large, (name, ds)
            assert f"probe_{large[(name, ds)]}{suffix}.yaml" in probes, (name, ds)


@pytest.mark.parametrize("path", [p for p in RECIPES if "cifar" in p.stem], ids=lambda p: p.stem)
def test_cifar_recipe_says_what_is_not_published(path: Path) -> None:
    """A CIFAR recipe built from another dataset's script says so (no silent borrowing)."""
    text = recipe_text(path)
    name = load_config(path).method.name
    if name == "paco" and "cifar100" in path.stem:
        return  # the authors' own CIFAR-100-LT scripts
    assert "NOT PUBLISHED" in text or "CHOSEN" in text
    if name == "bcl":  # the reproduction report's values, checked and stated (issue 23)
        assert "lambda 2.0, mu 0.6, tau 0.1" in text and "UNVERIFIED" in text
        assert "method.ce_weight=2.0 method.bcl_weight=0.6" in text.replace("\n# ", " ")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_names_its_source_and_holds_the_published_values(path: Path) -> None:
    cfg = load_config(path)
    name = cfg.method.name
    prefix = name + "_" + cfg.model.backbone + "_"
    assert path.stem.startswith(prefix)
    assert "Source:" in recipe_text(path), "every recipe names its source"
    # b{batch}-{sched}-{epochs}e (method names may hold "_": supcon_inbatch)
    batch, sched, epochs = path.stem.removeprefix(prefix).split("_")[0].split("-")
    assert cfg.optim.batch_size == int(batch.removeprefix("b"))
    assert cfg.optim.epochs == int(epochs.removesuffix("e"))
    assert cfg.optim.schedule == {"cos": "cosine", "step": "step"}[sched]
    if cfg.data.dataset.startswith("cifar"):
        assert cfg.model.backbone == "resnet32" and cfg.data.image_size == 32
        ratio = int(cfg.data.imbalance_ratio)
        assert path.stem.endswith(f"_{cfg.data.dataset}{ratio}")
        expected = PUBLISHED_CIFAR[(name, cfg.data.dataset, ratio)]
        augmentation = AUGMENTATION_CIFAR.get(name)
    else:
        assert cfg.model.backbone == "resnet50"
        inat = cfg.data.dataset == "inat" and name in PUBLISHED_INAT
        expected = PUBLISHED_INAT[name] if inat else PUBLISHED[name]
        augmentation = AUGMENTATION_INAT[name] if inat else AUGMENTATION.get(name)
    if augmentation is not None:
        assert cfg.data.augmentation == augmentation
    for key, value in expected.items():
        section = cfg.optim if key in OPTIM_KEYS else cfg.method
        assert getattr(section, key) == value, key
    assert cfg.run.output_dir.endswith(path.stem)


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_one_step(path: Path, tmp_path: Path) -> None:
    from balfeat.engine.trainer import Trainer

    cfg = load_config(path, [*TINY, *queue_overrides(path), f"run.output_dir={tmp_path}"])
    summary = Trainer(cfg).fit()
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])


def test_every_imagenet_lt_recipe_has_a_probe_recipe() -> None:
    lt = {p.stem for p in RECIPES if load_config(p).data.dataset == "imagenet"}
    probed = {p.stem.removeprefix("probe_").removesuffix("_on-lt-test") for p in PROBES}
    assert lt == probed


@pytest.mark.parametrize("path", PROBES, ids=lambda p: p.stem)
def test_probe_recipe_holds_tsc_protocol_and_trains_one_epoch(path: Path) -> None:
    import torch

    from balfeat.classify.job import load_probe_job
    from balfeat.classify.probe import ProbeConfig, train_linear_on_features

    p = load_probe_job([str(path)]).probe
    text = path.read_text()
    assert "Source:" in text and "targeted-supcon" in text
    # github:LTH14/targeted-supcon README 2nd stage + main_lincls_imba.py defaults
    assert (p.epochs, p.lr, p.milestones, p.batch_size, p.weight_decay) == (
        40, 10.0, [20, 30], 2048, 0.0,
    )  # fmt: skip
    assert p.balanced and p.repeat == 4 and p.protocol == "reference"
    # their ImageNet-LT transform has ColorJitter(0.4, 0.4, 0.4, 0): dataloader.py:28-34
    assert p.train_augmentation == "longtail"
    assert p.val_split.endswith("imagenet_longtail_test.txt")
    pre = Path(p.checkpoint).parent.name
    assert find_recipe("pretrain", pre), "a probe recipe names an existing pretrain recipe"
    assert p.out.endswith(path.stem)
    if not pre.startswith("tsc_"):
        assert "Chosen" in text, "a borrowed protocol says so"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=gen)
    y = torch.arange(24) % 3
    cfg = ProbeConfig(
        epochs=1,
        lr=0.1,
        milestones=tuple(p.milestones),
        weight_decay=p.weight_decay,
        batch_size=8,
        balanced=p.balanced,
        repeat=p.repeat,
    )
    res = train_linear_on_features(x, y, x, y, 3, cfg)
    assert res.val_logits.shape == (24, 3)


def test_published_results_yaml_and_md_agree() -> None:
    """balfeat/study/published_results.yaml is the machine-readable copy of the .md table: every
    number in the yaml is in the md row of its method, a verified row has a number and a source,
    a todo row has none (no number entered from memory)."""
    import yaml

    docs = CONFIGS.parent / "docs"
    from balfeat.study.published import TABLE

    table = yaml.safe_load(TABLE.read_text())["results"]
    md_rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in (docs / "published-results.md").read_text().splitlines()
        if line.startswith("|") and not line.startswith("| ---")
    ]
    for row in table:
        values = [row[k] for k in ("overall", "many", "medium", "few")]
        if row["status"] == "todo":
            assert values == [None] * 4, row
            continue
        assert row["status"] == "verified" and row["overall"] is not None, row
        assert "README" in row["source"] or "Table" in row["source"], row
        matches = [
            r for r in md_rows if r[0].startswith(row["method"]) and f"{row['overall']:.1f}" == r[3]
        ]
        assert matches, f"{row['method']} {row['dataset']} {row['overall']} missing from the .md"


@pytest.mark.parametrize("path", CIFAR_PROBES, ids=lambda p: p.stem)
def test_cifar_probe_recipe_is_the_reference_protocol_on_the_balanced_set(path: Path) -> None:
    from balfeat.classify.job import load_probe_job

    p = load_probe_job([str(path)]).probe
    assert p.dataset == ("cifar100" if path.stem.endswith("cifar100") else "cifar10")
    assert (p.protocol, p.passes, p.epochs, p.lr, p.milestones) == ("fast", 5, 100, 30.0, [60, 80])
    assert p.image_size == 32 and p.weight_decay == 0.0 and p.batch_size == 256
    assert "CHOSEN" in path.read_text() and p.out.endswith(path.stem)


def test_every_recipe_file_is_a_pretraining_or_a_probe_recipe() -> None:
    assert set(_PROBE_FILES) == set(PROBES) | set(CIFAR_PROBES) | set(INAT_PROBES) | set(
        LDAM_PROBES
    )
    assert len(RECIPES) == 34 and len(_PROBE_FILES) == 18 and len(LDAM_PROBES) == 6


@pytest.mark.parametrize("path", LDAM_PROBES, ids=lambda p: p.stem)
def test_ldam_probe_recipe_holds_the_tsc_supplement_second_stage(path: Path) -> None:
    """TSC supp_release.pdf Appendix A: 200 epochs, LDAM + class re-weighting, batch 128,
    lr 0.1 x0.1 at 140/180/190, on the long-tailed set of the pre-training's ratio."""
    from balfeat.classify.job import load_probe_job

    p = load_probe_job([str(path)]).probe
    assert (p.epochs, p.lr, p.milestones, p.gamma, p.batch_size) == (
        200, 0.1, [140, 180, 190], 0.1, 128,
    )  # fmt: skip
    assert (p.loss, p.reweight, p.protocol) == ("ldam", "class_balanced", "fast")
    ds, ratio = path.stem.removeprefix("probe-ldam_cifar-lt_on-").split("-lt")
    assert p.dataset == ds and p.train_imbalance_ratio == float(ratio)
    assert "supp_release.pdf" in recipe_text(path) and "CHOSEN" in recipe_text(path)
    assert p.out.endswith(path.stem)
    for method in ("tsc", "supcon_inbatch"):
        assert find_recipe("pretrain", f"{method}_resnet32_b1024-cos-1000e_{ds}-lt{ratio}")


@pytest.mark.parametrize("path", INAT_PROBES, ids=lambda p: p.stem)
def test_inat_probe_recipe_holds_the_published_second_stage(path: Path) -> None:
    from balfeat.classify.job import load_probe_job

    p = load_probe_job([str(path)]).probe
    assert "imagenet_inat/config/iNaturalist18/kcl.yaml" in path.read_text()
    assert (p.epochs, p.lr, p.milestones, p.batch_size, p.weight_decay) == (
        40, 30.0, [20, 30], 2048, 0.0,
    )  # fmt: skip
    assert p.balanced and p.repeat == 4 and p.protocol == "reference"
    assert p.train_augmentation == "supervised"  # their iNaturalist18 key: no jitter
    assert p.val_split.endswith("iNaturalist18_val.txt")
    pre = Path(p.checkpoint).parent.name
    assert find_recipe("pretrain", pre) and p.out.endswith(path.stem)
