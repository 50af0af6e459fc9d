"""Each real method (SL, MoCo v2, KCL) trains end to end through the config/build path on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=64",
    "data.num_classes=4",
    "data.image_size=16",
    "data.augmentation=none",
    "model.backbone=resnet20",
    "method.K=32",
    "method.m=0.9",
    "optim.batch_size=16",
    "optim.epochs=4",
    "optim.base_lr=0.5",
    "run.device=cpu",
    "run.log_every=1",
    "run.progress=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sl", "moco_v2", "kcl"])
def test_method_loss_falls(tmp_path: Path, name: str) -> None:
    cfg = load_config(None, [*TINY, f"method.name={name}", f"run.output_dir={tmp_path}"])
    trainer = Trainer(cfg)
    trainer.fit()
    losses = np.array([r["loss"] for r in trainer.history])
    assert len(losses) == 16 and np.isfinite(losses).all()
    # MoCo/KCL: compare from step 3 on, once the queue (K=32 = 2 batches) holds real keys.
    first = losses[:4] if name == "sl" else losses[2:5]
    assert losses[-3:].mean() < first.mean() - 0.05, losses


def test_build_views_and_imbalance_profile() -> None:
    cfg = load_config(
        None,
        [
            *TINY,
            "method.name=kcl",
            "data.imbalance_ratio=4",
            "data.synthetic_size=400",
            "data.channels=1",
        ],
    )
    ds = build.build_train_dataset(cfg)
    counts = np.bincount(np.asarray(ds.targets))  # type: ignore[attr-defined]
    assert counts[0] == 100 and counts[-1] == 25 and np.all(np.diff(counts) <= 0)
    image, _label = ds[0]
    assert isinstance(image, list) and len(image) == 2 and image[0].shape == (1, 16, 16)
    cfg.method.name = "sl"
    cfg.data.max_samples = 50
    ds = build.build_train_dataset(cfg)
    assert len(ds) == 50  # type: ignore[arg-type]
    assert ds[0][0].shape == (1, 16, 16)


def test_lr_factor_schedules() -> None:
    cfg = load_config(None, ["optim.epochs=10", "optim.schedule=step", "optim.milestones=[4,8]"])
    assert [build.lr_factor(cfg, e) for e in (0, 3, 4, 8, 9)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.01]
    )
    # TSC's CIFAR schedule: x0.01 after 160 and x0.0001 after 180 epochs
    cfg = load_config(
        None,
        [
            "optim.epochs=200",
            "optim.schedule=step",
            "optim.milestones=[160,180]",
            "optim.gamma=0.01",
        ],
    )
    assert [build.lr_factor(cfg, e) for e in (159, 160, 180)] == pytest.approx([1, 1e-2, 1e-4])
    cfg = load_config(None, ["optim.epochs=10", "optim.warmup_epochs=2"])
    assert build.lr_factor(cfg, 0) == pytest.approx(0.5)
    assert build.lr_factor(cfg, 5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 5 / 10)))


def test_split_dataset_with_class_set(tmp_path: Path) -> None:
    from PIL import Image

    lines = []
    for c, wnid in enumerate(["n001", "n002", "n003"]):
        (tmp_path / wnid).mkdir()
        for i in range(2):
            Image.new("RGB", (20, 20), (40 * c, 0, 0)).save(tmp_path / wnid / f"{i}.png")
            lines.append(f"/{wnid}/{i}.png {c}\n")
    (tmp_path / "train.txt").write_text("".join(lines))
    (tmp_path / "set.txt").write_text("/n003\n/n001\n")
    cfg = load_config(
        None,
        [
            "data.dataset=imagenet",
            f"data.root={tmp_path}",
            f"data.train_split={tmp_path / 'train.txt'}",
            f"data.class_set={tmp_path / 'set.txt'}",
            "data.image_size=16",
            "data.channels=3",
            "data.augmentation=supervised",
            "method.name=sl",
        ],
    )
    ds = build.build_train_dataset(cfg)
    assert len(ds) == 4  # type: ignore[arg-type]
    assert sorted(np.asarray(ds.targets).tolist()) == [0, 0, 1, 1]  # type: ignore[attr-defined]
    assert ds[0][0].shape == (3, 16, 16)


def test_empty_train_split_scans_the_image_folder_and_keeps_the_class_set(tmp_path: Path) -> None:
    """The reference's --clsset without --trainset: every train image of the set's classes."""
    from PIL import Image

    for c, wnid in enumerate(["n003", "n001", "n002"]):
        (tmp_path / wnid).mkdir()
        for i in range(c + 1):
            Image.new("RGB", (20, 20), (40 * c, 0, 0)).save(tmp_path / wnid / f"{i}.JPEG")
    (tmp_path / "n001" / "notes.txt").write_text("not an image")
    (tmp_path / "set.txt").write_text("/n001\n/n003\n")
    cfg = load_config(
        None,
        [
            "data.dataset=imagenet",
            f"data.root={tmp_path}",
            f"data.class_set={tmp_path / 'set.txt'}",
            "data.image_size=16",
            "data.channels=3",
            "data.augmentation=supervised",
            "method.name=sl",
        ],
    )
    ds = build.build_train_dataset(cfg)
    # n001 holds 2 images, n003 holds 1; relabelled in the set's (sorted) order: n001 -> 0.
    assert len(ds) == 3  # type: ignore[arg-type]
    assert np.asarray(ds.targets).tolist() == [0, 0, 1]  # type: ignore[attr-defined]
    from balfeat.data.folder_scan import scan_image_folder

    entries = scan_image_folder(tmp_path)
    assert [e.label for e in entries] == [0, 0, 1, 1, 1, 2]  # sorted folders n001, n002, n003
    assert entries[0].path == "/n001/0.JPEG"
    with pytest.raises(Exception, match="does not exist"):
        scan_image_folder(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "prefill", "full"),
    [
        ("kcl", "auto", True),
        ("moco_v2", "auto", False),
        ("kcl", "never", False),
        ("moco_v2", "always", True),
    ],
)
def test_queue_prefilled_before_first_step(
    tmp_path: Path, name: str, prefill: str, full: bool
) -> None:
    """The reference KCL fills its queue with keys before training; MoCo does not by default."""
    cfg = load_config(
        None,
        [
            *TINY,
            f"method.name={name}",
            f"method.prefill={prefill}",
            f"run.output_dir={tmp_path}",
        ],
    )
    trainer = Trainer(cfg)
    trainer._setup()
    trainer._prefill_queue()
    queue = trainer.method.queue  # type: ignore[attr-defined]
    assert bool(queue.full) is full
    if full and name == "kcl":
        assert (queue.labels >= 0).all()
