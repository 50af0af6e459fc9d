"""SL as BalFeat's main_sl.py runs it (issue 23): best-by-validation selection (``run.keep_best``,
main_sl.py:240-255, helper.py:246-251) and re-training that starts from the pre-trained
classifier (``model.init_classifier``, main_sl.py:101-118)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from balfeat.engine import build
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.engine.validation import BEST_INFO, BEST_NAME, BestByValidation
from balfeat.errors import CheckpointError, TrainingError
from balfeat.models.loading import load_classifier_state


def _image_folder(root: Path, per_class: int = 6) -> Path:
    """Two classes of flat-coloured 16 px images; ``val.txt`` lists 2 of each class."""
    from PIL import Image

    lines = []
    for c, wnid in enumerate(["n001", "n002"]):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            colour = (200 * c + 10 * i % 50, 30, 60 * (1 - c))
            Image.new("RGB", (16, 16), colour).save(root / wnid / f"{i}.png")
            if i < 2:
                lines.append(f"/{wnid}/{i}.png {c}\n")
    (root / "val.txt").write_text("".join(lines))
    return root


def _sl(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "data.dataset=imagenet",
        f"data.root={root}",
        "data.image_size=16",
        "data.channels=3",
        "data.augmentation=none",
        "model.backbone=resnet8",
        "method.name=sl",
        "optim.batch_size=4",
        "optim.base_lr=0.5",
        "run.device=cpu",
        "run.progress=false",
        f"run.output_dir={out}",
        *extra,
    ]


def test_best_by_validation_keeps_the_first_best_epoch_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    """helper.py:246-251: NAME.pth.tar is written only when acc1 > best_acc1."""
    last = tmp_path / "last.pth"
    best = BestByValidation([], tmp_path, batch_size=2)  # type: ignore[arg-type]
    wrote = []
    for epoch, top1 in enumerate([50.0, 40.0, 50.0, 60.0, 55.0], start=1):
        torch.save({"epoch": epoch}, last)
        wrote.append(best.update(epoch, top1))
    assert wrote == [True, False, False, True, False]
    assert torch.load(tmp_path / BEST_NAME)["epoch"] == 4
    assert json.loads((tmp_path / BEST_INFO).read_text()) == {"epoch": 4, "val_top1": 60.0}
    again = BestByValidation([], tmp_path, batch_size=2)  # type: ignore[arg-type]
    assert again.best == 60.0 and not again.update(6, 59.0)  # a resumed run keeps the best


def test_keep_best_validates_every_epoch_and_copies_the_best_checkpoint(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    cfg = load_config(
        None, _sl(root, out, "data.val_split=" + str(root / "val.txt"), "optim.epochs=3",
                  "run.keep_best=true")
    )  # fmt: skip
    Trainer(cfg).fit()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["epoch"], r["val_top1"]) for r in lines if "val_top1" in r]
    assert [e for e, _ in vals] == [1, 2, 3]
    best_epoch = max(vals, key=lambda ev: (ev[1], -ev[0]))[0]  # the first of the best
    info = json.loads((out / BEST_INFO).read_text())
    assert info["epoch"] == best_epoch
    assert torch.load(out / BEST_NAME, weights_only=False)["epoch"] == best_epoch


def test_keep_best_needs_a_classifier_and_warns_without_a_validation_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _image_folder(tmp_path / "images")
    cfg = load_config(None, _sl(root, tmp_path / "a", "optim.epochs=1", "run.keep_best=true"))
    Trainer(cfg).fit()
    assert "no validation set" in caplog.text and not (tmp_path / "a" / BEST_NAME).exists()
    cfg = load_config(
        None,
        _sl(root, tmp_path / "b", "optim.epochs=1", "run.keep_best=true", "method.name=moco_v2",
            f"data.val_split={root / 'val.txt'}"),
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r"keep_best.*has none"):
        Trainer(cfg).fit()


def test_init_classifier_starts_from_the_pretrained_classifier(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    Trainer(load_config(None, _sl(root, tmp_path / "pre", "optim.epochs=1"))).fit()
    ckpt = tmp_path / "pre" / "last.pth"
    pre = torch.load(ckpt, weights_only=False)["model"]
    retrain = _sl(root, tmp_path / "re", f"model.init_checkpoint={ckpt}",
                  "method.freeze_backbone=true")  # fmt: skip
    fresh = build.build_method(load_config(None, retrain), 2)
    assert not torch.equal(fresh.head.weight, pre["head.weight"])
    cfg = load_config(None, [*retrain, "model.init_classifier=true"])
    started = build.build_method(cfg, 2)
    assert torch.equal(started.head.weight, pre["head.weight"])
    assert torch.equal(started.head.bias, pre["head.bias"])
    assert torch.equal(started.backbone.state_dict()["conv1.weight"], pre["backbone.conv1.weight"])
    with pytest.raises(Exception, match=r"init_classifier.*shape"):
        build.build_method(cfg, 3)  # another class count


def test_load_classifier_state_reads_the_reference_layout(tmp_path: Path) -> None:
    """main_sl.py checkpoints: state_dict with module.fc.weight / module.fc.bias."""
    w, b = torch.randn(5, 7), torch.randn(5)
    state = {"module.fc.weight": w, "module.fc.bias": b, "module.conv1.weight": torch.zeros(1)}
    torch.save({"state_dict": state}, tmp_path / "ref.pth.tar")
    got_w, got_b = load_classifier_state(tmp_path / "ref.pth.tar")
    assert torch.equal(got_w, w) and got_b is not None and torch.equal(got_b, b)
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "moco.pth")
    with pytest.raises(CheckpointError, match="no linear classifier"):
        load_classifier_state(tmp_path / "moco.pth")
