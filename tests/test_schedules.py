"""balfeat.schedules.lr_factor against hand-written copies of the authors' learning-rate rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from balfeat.engine.build import lr_factor as config_lr_factor
from balfeat.engine.config import load_config
from balfeat.schedules import lr_factor

ROOT = Path(__file__).resolve().parents[1]


def paco_cifar_lr(epoch: int, lr: float = 1.0, warmup_epochs: int = 10) -> float:
    """A copy of PaCo/LT/paco_cifar.py:586-597 (adjust_learning_rate; --cos is ignored)."""
    if epoch <= warmup_epochs:
        return lr / warmup_epochs * (epoch + 1)
    if epoch > 360:
        return lr * 0.01
    if epoch > 320:
        return lr * 0.1
    return lr


def paco_lt_lr(epoch: int, epochs: int, warmup_epochs: int, lr: float = 1.0) -> float:
    """A copy of PaCo/LT/paco_lt.py:618-629 (= GPaCo/LT/paco_lt.py:595-606) with --cos."""
    if epoch < warmup_epochs:
        return lr / warmup_epochs * (epoch + 1)
    return (
        lr
        * 0.5
        * (1.0 + math.cos(math.pi * (epoch - warmup_epochs + 1) / (epochs - warmup_epochs + 1)))
    )


def bcl_lr(epoch: int, epochs: int, lr: float = 1.0) -> float:
    """A copy of BCL main.py:398-409 (adjust_lr) with its defaults: --cos, warm-up 0."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch + 1) / (epochs + 1)))


def test_paco_cifar_rule_is_reproduced_by_the_step_schedule_with_inclusive_warmup() -> None:
    for epoch in range(400):
        got = lr_factor(
            epoch, 400, "step", milestones=(321, 361), warmup_epochs=10, warmup_inclusive=True
        )
        assert got == pytest.approx(paco_cifar_lr(epoch), abs=1e-12), epoch
    # the inclusive warm-up is what differs: epoch 10 runs at 1.1x the base rate
    assert lr_factor(10, 400, "step", (321, 361), warmup_epochs=10, warmup_inclusive=True) == 1.1
    assert lr_factor(10, 400, "step", (321, 361), warmup_epochs=10) == 1.0


@pytest.mark.parametrize("name", ["cifar10-lt100", "cifar100-lt10"])
def test_paco_cifar_recipes_follow_the_authors_rule(name: str) -> None:
    cfg = load_config(ROOT / f"configs/pretrain/cifar-lt/paco_resnet32_b128-step-400e_{name}.yaml")
    assert cfg.optim.epochs == 400
    for epoch in range(cfg.optim.epochs):
        assert config_lr_factor(cfg, epoch) == pytest.approx(paco_cifar_lr(epoch), abs=1e-12)


@pytest.mark.parametrize(("epochs", "warmup"), [(400, 10), (400, 5), (90, 0)])
def test_shifted_cosine_is_paco_and_gpaco_rule(epochs: int, warmup: int) -> None:
    for epoch in range(epochs):
        got = lr_factor(epoch, epochs, "cosine", warmup_epochs=warmup, cosine_form="shifted")
        assert got == pytest.approx(paco_lt_lr(epoch, epochs, warmup), abs=1e-12), epoch


@pytest.mark.parametrize("epochs", [90, 100, 200])
def test_shifted_cosine_without_warmup_is_bcl_rule(epochs: int) -> None:
    for epoch in range(epochs):
        got = lr_factor(epoch, epochs, "cosine", cosine_form="shifted")
        assert got == pytest.approx(bcl_lr(epoch, epochs), abs=1e-12)


def test_moco_cosine_differs_from_the_shifted_one_mid_run() -> None:
    """The offset the option exists for: near 2% of the base rate mid-run (400 epochs, 10 warm)."""
    moco = lr_factor(200, 400, "cosine", warmup_epochs=10)
    shifted = lr_factor(200, 400, "cosine", warmup_epochs=10, cosine_form="shifted")
    assert moco == pytest.approx(0.5)
    assert shifted == pytest.approx(0.5 * (1 + math.cos(math.pi * 191 / 391)))
    assert shifted - moco > 0.015


@pytest.mark.parametrize(
    "path",
    [
        "pretrain/imagenet-lt/paco_resnet50_b128-cos-400e_imagenet-lt.yaml",
        "pretrain/inat2018/gpaco_resnet50_b128-cos-400e_inat2018.yaml",
        "pretrain/imagenet-lt/bcl_resnet50_b256-cos-90e_imagenet-lt.yaml",
        "pretrain/cifar-lt/bcl_resnet32_b256-cos-200e_cifar100-lt100.yaml",
    ],
)
def test_successor_recipes_use_their_authors_cosine(path: str) -> None:
    cfg = load_config(ROOT / "configs" / path)
    o = cfg.optim
    for epoch in range(o.epochs):
        want = (
            bcl_lr(epoch, o.epochs)
            if "bcl" in path
            else paco_lt_lr(epoch, o.epochs, o.warmup_epochs)
        )
        assert config_lr_factor(cfg, epoch) == pytest.approx(want, abs=1e-12)
