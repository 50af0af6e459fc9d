"""data.dataset=cifar10-lt: the long-tailed CIFAR protocol through engine.build and one step."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from balfeat.data.imbalance import exponential_counts
from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer


def _fake_cifar10(root: Path) -> None:
    """torchvision's cifar-10-batches-py layout with 10 images per class (5 x 20)."""
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = list(np.repeat(np.arange(10), 2)[rng.permutation(20)])
        data = rng.integers(0, 255, (20, 3072), dtype=np.uint8)
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def _pretrain_one_step_on_cifar10_lt(tmp_path: Path) -> Path:
    """A fake CIFAR-10 under ``tmp_path`` and a one-step SL run on its ratio-10 LT subset."""
    from balfeat.cli.main import main

    _fake_cifar10(tmp_path)
    run = tmp_path / "run"
    assert main([
        "pretrain", "--quiet", "data.dataset=cifar10-lt", f"data.root={tmp_path}",
        "data.imbalance_ratio=10", "data.image_size=32", "data.channels=3",
        "model.backbone=resnet8", "method.name=sl", "optim.batch_size=8", "run.max_steps=1",
        "run.device=cpu", f"run.output_dir={run}",
    ]) == 0  # fmt: skip
    return run


def test_cifar10_lt_dataset_and_one_paco_step(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    cfg = load_config(
        None,
        [
            "data.dataset=cifar10-lt",
            f"data.root={tmp_path}",
            "data.imbalance_ratio=10",
            "data.image_size=32",
            "data.channels=3",
            "data.num_workers=0",
            "model.backbone=resnet8",
            "method.name=paco",
            "method.K=16",
            "method.dim=8",
            "method.bn_splits=2",
            "optim.batch_size=8",
            "optim.epochs=1",
            "run.max_steps=1",
            "run.progress=false",
            "run.device=cpu",
            f"run.output_dir={tmp_path / 'run'}",
        ],
    )
    ds = build.build_train_dataset(cfg)
    counts = np.bincount(np.asarray(ds.targets), minlength=10).tolist()  # type: ignore[attr-defined]
    assert counts == exponential_counts(10, 10, 10) and ds.num_classes == 10  # type: ignore[attr-defined]
    trainer = Trainer(cfg)
    assert trainer.fit()["steps"] == 1
    assert float(trainer.method.log_prior[0]) > float(trainer.method.log_prior[9])


def test_probe_a_cifar_lt_checkpoint_on_balanced_cifar(tmp_path: Path) -> None:
    """``balfeat probe --dataset cifar10``: the whole balanced train/test sets, many/medium/few
    from the checkpoint's own CIFAR-10-LT counts."""
    import json

    from balfeat.cli.main import main

    run = _pretrain_one_step_on_cifar10_lt(tmp_path)
    out = tmp_path / "probe"
    assert main([
        "probe", "--quiet", "--checkpoint", str(run), "--dataset", "cifar10",
        "--data-root", str(tmp_path), "--epochs", "2", "--lr", "1", "--passes", "0",
        "--out", str(out),
    ]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["group_source"] == (
        "the checkpoint's training counts (cifar10-lt ratio 10 (LDAM-DRW profile))"
    )
    assert res["probe_train_counts"] == [10] * 10  # the balanced pool
    assert [r["train_count"] for r in res["per_class"]] == exponential_counts(10, 10, 10)


def test_probe_refuses_a_backbone_of_other_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from balfeat.cli.main import main

    _fake_cifar10(tmp_path)
    run = tmp_path / "run"  # a 1-channel (Fashion-MNIST-shaped) backbone
    assert main([
        "pretrain", "--quiet", "data.dataset=synthetic", "data.image_size=16", "data.channels=1",
        "model.backbone=resnet8", "method.name=sl", "optim.batch_size=8", "run.max_steps=1",
        "run.device=cpu", f"run.output_dir={run}",
    ]) == 0  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "probe"
    assert main([
        "probe", "--quiet", "--checkpoint", str(run), "--dataset", "cifar10",
        "--data-root", str(tmp_path), "--epochs", "1", "--out", str(out),
    ]) == 2  # fmt: skip
    assert "takes 1-channel images but --dataset cifar10 has 3-channel" in capsys.readouterr().err
    assert not out.exists()


def test_probe_on_the_long_tailed_cifar_set_with_ldam(tmp_path: Path) -> None:
    """TSC's CIFAR-LT second stage: probe.train_imbalance_ratio trains on the LT subset (the
    LDAM-DRW protocol's counts), with the LDAM loss and class-balanced weights."""
    import json

    from balfeat.cli.main import main

    run = _pretrain_one_step_on_cifar10_lt(tmp_path)
    out = tmp_path / "probe"
    assert main([
        "probe", "--quiet", "--checkpoint", str(run), "--dataset", "cifar10",
        "--data-root", str(tmp_path), "--epochs", "2", "--lr", "0.1", "--passes", "0",
        "--out", str(out), "--train-imbalance-ratio", "10", "--loss", "ldam",
        "--reweight", "class_balanced",
    ]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    # n_i = int(10 * 0.1 ** (i / 9)): the LDAM-DRW counts of 10 images per class at ratio 10
    assert res["probe_train_counts"] == [10, 7, 5, 4, 3, 2, 2, 1, 1, 1]


def test_probe_imbalance_ratio_needs_cifar() -> None:
    from balfeat.classify.job import load_probe_job
    from balfeat.errors import ConfigError

    with pytest.raises(ConfigError, match="train_imbalance_ratio"):
        load_probe_job([], ["probe.dataset=imagenet", "probe.train_imbalance_ratio=10"])
    with pytest.raises(ConfigError, match="protocol fast"):
        load_probe_job([], ["probe.protocol=reference", "probe.loss=ldam"])
