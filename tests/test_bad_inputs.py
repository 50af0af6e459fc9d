"""Bad inputs, as a user meets them: one clear message naming what and where, exit code 2.

Each test triggers a bad input through ``balfeat pretrain`` / ``balfeat probe`` (or the library
entry point where the CLI cannot reach it) and checks the exit code or error class, that the
message names the file:line / key / class, and that nothing was written to the output location
before the error.

A non-finite loss is covered by
``tests/engine/test_engine_trainer.py::test_non_finite_loss_names_step_and_keeps_checkpoint``
(stops, names the step, keeps the last good checkpoint); not repeated here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from balfeat.cli.main import main
from balfeat.engine.checkpoint import load_checkpoint
from balfeat.errors import BalfeatError, DataError, SplitFormatError

CLASSES = ("n01", "n02", "n03")

#: ``balfeat pretrain`` on split files: 3 classes x 2 images of 16x16, resnet8, one step.
IMAGENET = [
    "data.dataset=imagenet",
    "data.channels=3",
    "data.image_size=16",
    "data.augmentation=none",
    "model.backbone=resnet8",
    "method.name=sl",
    "optim.batch_size=6",
    "optim.epochs=1",
    "run.device=cpu",
    "run.progress=false",
]

#: ``balfeat pretrain`` on synthetic images.
SYNTH = [
    "data.dataset=synthetic",
    "data.synthetic_size=16",
    "data.num_classes=4",
    "data.image_size=16",
    "data.augmentation=none",
    "model.backbone=resnet8",
    "method.name=sl",
    "optim.batch_size=4",
    "optim.epochs=1",
    "run.device=cpu",
    "run.progress=false",
]


def _images(root: Path) -> str:
    """Write 2 PNGs per class under ``root``; return the split text (6 lines, labels 0..2)."""
    lines = []
    for label, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (40 * i, 80 * label, 200)).save(root / c / f"{i}.png")
            lines.append(f"/{c}/{i}.png {label}\n")
    return "".join(lines)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "data"
    return root, _images(root)


def _pretrain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str, Path]:
    out = tmp_path / "run"
    rc = main(["pretrain", "--quiet", *args, f"run.output_dir={out}"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, out


def _one_error_line(err: str, command: str = "pretrain") -> str:
    """The error line the CLI printed; asserts it is exactly one line without a traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith(f"balfeat {command}: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _split_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    root: Path,
    text: str,
    *extra: str,
) -> tuple[int, str, str, Path]:
    split = tmp_path / "train.txt"
    split.write_text(text)
    return _pretrain(
        tmp_path,
        capsys,
        *IMAGENET,
        f"data.root={root}",
        f"data.train_split={split}",
        *extra,
    )


# ------------------------------------------------------------------------------ split files
@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("/n01/0.png\n", r"train\.txt:7: expected 'path label'.*got '/n01/0\.png'"),
        ("/n01/9.png one\n", r"train\.txt:7: label 'one' is not an integer"),
        ("/n02/1.png 1\n", r"train\.txt:7: '/n02/1\.png' is listed twice \(first at line 4\)"),
    ],
    ids=["no-label", "non-integer-label", "duplicate"],
)
def test_malformed_split_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: tuple[Path, str],
    bad_line: str,
    message: str,
) -> None:
    root, text = data
    rc, _, err, out = _split_run(tmp_path, capsys, root, text + bad_line)
    assert rc == 2
    assert re.search(message, _one_error_line(err))
    assert not out.exists()


def test_label_out_of_range_in_train_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    # Line 6 says class 7 instead of 2: classes 3..6 would have no images.
    bad = text.replace("/n03/1.png 2", "/n03/1.png 7")
    rc, _, err, out = _split_run(tmp_path, capsys, root, bad)
    assert rc == 2
    line = _one_error_line(err)
    assert (
        "train.txt:6: label 7 makes 8 classes" in line
        and "class(es) 3, 4, 5, 6 have no images" in line
    )
    assert not out.exists()


def test_label_out_of_range_in_probe_val_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "val.txt").write_text(text.replace("/n02/0.png 1", "/n02/0.png 3"))
    out = tmp_path / "probe"
    args = ["probe", "--backbone", "resnet8", "--dataset", "imagenet", "--data-root", str(root)]
    args += ["--train-split", str(tmp_path / "train.txt"), "--val-split"]
    args += [str(tmp_path / "val.txt"), "--image-size", "16", "--device", "cpu", "--out", str(out)]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "val.txt:3: label 3 >= num_classes=3" in line
    assert not out.exists()


def test_split_file_library_entry_point() -> None:
    from balfeat.data.splits import parse_split_lines

    with pytest.raises(SplitFormatError, match=r"s\.txt:2: label 5 >= num_classes=3"):
        parse_split_lines(["/a/x.png 0\n", "/b/y.png 5\n"], "s.txt", num_classes=3)


# ------------------------------------------------------------------------------ images
def test_missing_image_is_an_error_naming_split_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    rc, _, err, out = _split_run(tmp_path, capsys, root, text + "/n01/gone.png 0\n")
    assert rc == 2
    line = _one_error_line(err)
    assert "train.txt:7: image " in line and "gone.png does not exist" in line
    assert "skip_bad_images" in line  # says what to do
    assert not out.exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_an_error_naming_split_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str], workers: int
) -> None:
    root, text = data
    (root / "n01" / "bad.png").write_bytes(b"not a png")
    # 7 images, batch 7: the one step loads every image. With a worker process the error comes
    # back wrapped in the worker's traceback; the CLI still prints the one original line.
    rc, _, err, out = _split_run(
        tmp_path,
        capsys,
        root,
        text + "/n01/bad.png 0\n",
        "optim.batch_size=7",
        f"data.num_workers={workers}",
    )
    assert rc == 2
    line = _one_error_line(err)
    assert "train.txt:7: cannot read image" in line and "bad.png" in line
    # Found when the image is loaded (checking 1M files up front would be too slow), so the
    # run directory exists, but no checkpoint was written.
    assert not list(out.glob("*.pth"))


def test_skip_bad_images_skips_and_lists_them_at_the_end(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    data: tuple[Path, str],
) -> None:
    root, text = data
    (root / "n01" / "bad.png").write_bytes(b"not a png")
    bad = text + "/n01/gone.png 0\n/n01/bad.png 0\n"
    rc, stdout, err, out = _split_run(
        tmp_path, capsys, root, bad, "data.skip_bad_images=true", "optim.batch_size=7"
    )
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1
    assert [Path(p).name for p in summary["bad_images"]] == ["gone.png", "bad.png"]
    # The end of the run logs them too (a WARNING, so also shown with --quiet).
    assert "skipped 2 missing or unreadable image(s)" in caplog.text
    assert "gone.png" in caplog.text and "bad.png" in caplog.text
    assert (out / "last.pth").is_file()


# ------------------------------------------------------------------------------ classes
def test_class_set_naming_unknown_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    cs = tmp_path / "clsset.txt"
    cs.write_text("/n01\n/n99\n/n03\n")
    rc, _, err, out = _split_run(tmp_path, capsys, root, text, f"data.class_set={cs}")
    assert rc == 2
    line = _one_error_line(err)
    assert "'n99' (" in line and "clsset.txt:2)" in line and "'n01'" not in line
    assert not out.exists()


def test_class_set_filters_and_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    cs = tmp_path / "clsset.txt"
    cs.write_text("/n03\n/n01\n")
    rc, _, err, out = _split_run(
        tmp_path, capsys, root, text, f"data.class_set={cs}", "optim.batch_size=4"
    )
    assert rc == 0, err
    assert load_checkpoint(out / "last.pth")["model"]["head.weight"].shape[0] == 2


def test_class_left_without_images_after_skipping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    for p in (root / "n02").iterdir():
        p.unlink()
    rc, _, err, out = _split_run(tmp_path, capsys, root, text, "data.skip_bad_images=true")
    assert rc == 2
    line = _one_error_line(err)
    assert "class(es) 1 ('n02')" in line and "no images left after skipping 2" in line
    assert not out.exists()


def test_subset_classes_without_images_library(tmp_path: Path) -> None:
    from balfeat.data.datasets import SplitImageDataset, subset_classes
    from balfeat.data.splits import SplitEntry

    root = tmp_path / "data"
    _images(root)
    entries = [SplitEntry("/n01/0.png", 0), SplitEntry("/n03/0.png", 2)]
    ds = SplitImageDataset(root, entries, num_classes=3)
    with pytest.raises(DataError, match="classes without images: 1"):
        subset_classes(ds, [0, 1])
    with pytest.raises(DataError, match=r"unknown classes 7 .*3 classes"):
        subset_classes(ds, [0, 7])


# ------------------------------------------------------------------------------ KCL / batches
def test_kcl_posk_larger_than_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err, out = _pretrain(
        tmp_path, capsys, *SYNTH, "method.name=kcl", "method.K=8", "method.posk=16"
    )
    assert rc == 2
    line = _one_error_line(err)
    assert "posk=16 is larger than the queue (K=8 keys)" in line  # checked once, in KCL()
    assert not out.exists()


def test_kcl_posk_larger_than_queue_library() -> None:
    from balfeat.methods.kcl import KCL
    from balfeat.models.backbones import build_backbone

    with pytest.raises(BalfeatError, match=r"posk=9 is larger than the queue \(K=4"):
        KCL(build_backbone("resnet8", small_images=True, in_channels=1), K=4, posk=9)


def test_queue_not_a_multiple_of_the_batch_wraps_around(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # K=10 with a global batch of 4: the queue pointer wraps (4, 8, 2, ...) - no error.
    rc, stdout, err, out = _pretrain(
        tmp_path,
        capsys,
        *SYNTH,
        "method.name=kcl",
        "method.K=10",
        "method.posk=2",
        "method.dim=8",
        "method.bn_splits=2",
        "run.max_steps=3",
    )
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["final_loss"] == summary["final_loss"]  # not NaN
    state = load_checkpoint(out / "last.pth")
    ptr = int(state["model"]["queue.ptr"])
    assert 0 <= ptr < 10 and int(state["model"]["queue.count"]) == 10


def test_batch_larger_than_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err, out = _pretrain(tmp_path, capsys, *SYNTH, "optim.batch_size=32")
    assert rc == 2
    line = _one_error_line(err)
    assert "gives 16 images per rank, fewer than one batch of 32" in line
    assert "optim.batch_size" in line
    assert not out.exists()


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optim.bach_size=4",
            "unknown config key 'optim.bach_size'.*did you mean 'optim.batch_size'",
        ),
        ("optim.lr=0.1", "unknown config key 'optim.lr'.*did you mean 'optim.base_lr'"),
        ("optim.batch_size=four", "'optim.batch_size'.*expected int, got 'four'"),
        ("data.balanced=maybe", "'data.balanced'.*expected bool, got 'maybe'"),
        ("method.name=simclr", "'method.name'.*expected one of 'sl', 'moco_v1'"),
    ],
    ids=["typo", "short-name", "wrong-int", "wrong-bool", "wrong-choice"],
)
def test_config_override_typos_and_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    rc, _, err, out = _pretrain(tmp_path, capsys, *SYNTH, override)
    assert rc == 2
    assert re.search(message, _one_error_line(err))
    assert not out.exists()


def test_config_file_typo_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("optim:\n  epochs: 1\n  weight_decy: 0.0001\n")
    rc, _, err, out = _pretrain(tmp_path, capsys, "--config", str(cfg), *SYNTH)
    assert rc == 2
    line = _one_error_line(err)
    assert "'optim.weight_decy'" in line and "exp.yaml" in line
    assert "did you mean 'optim.weight_decay'" in line
    assert not out.exists()


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture
def sl_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """``last.pth`` of a one-step SL resnet8 run on synthetic data."""
    out = tmp_path / "sl"
    assert main(["pretrain", "--quiet", *SYNTH, "run.max_steps=1", f"run.output_dir={out}"]) == 0
    capsys.readouterr()
    return out / "last.pth"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.name=moco_v2", "trained with method 'sl' but this run uses 'moco_v2'"),
        ("model.backbone=resnet20", "trained with backbone 'resnet8' but this run uses 'resnet20'"),
    ],
    ids=["other-method", "other-architecture"],
)
def test_resume_from_checkpoint_of_another_method_or_architecture(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sl_checkpoint: Path,
    override: str,
    message: str,
) -> None:
    rc, _, err, out = _pretrain(tmp_path, capsys, "--resume", str(sl_checkpoint), *SYNTH, override)
    assert rc == 2
    line = _one_error_line(err)
    assert message in line and str(sl_checkpoint) in line
    assert not out.exists()


def test_probe_with_wrong_backbone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sl_checkpoint: Path, data: tuple[Path, str]
) -> None:
    root, text = data
    (tmp_path / "s.txt").write_text(text)
    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(sl_checkpoint), "--backbone", "resnet20"]
    args += ["--dataset", "imagenet", "--data-root", str(root), "--train-split"]
    args += [str(tmp_path / "s.txt"), "--val-split", str(tmp_path / "s.txt")]
    args += ["--image-size", "16", "--device", "cpu", "--out", str(out)]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "resnet8" in line and "resnet20" in line
    assert not out.exists()


# --- issue 11: nothing lost, nothing silently wrong (export, atomic writer, CLI errors) ---------


def _training_ckpt(path: Path, small_images: bool = False) -> Path:
    import torch

    from balfeat.models.backbones import build_backbone

    bb = build_backbone("resnet18", small_images=small_images)
    model = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": []}, "step": 1}, path)
    return path


def test_export_never_overwrites_the_training_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _training_ckpt(tmp_path / "last.pth")
    before = ckpt.read_bytes()
    for extra in ([], ["--force"]):
        assert main(["export", str(ckpt), "--out", str(ckpt), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "checkpoint being exported" in err
    other = _training_ckpt(tmp_path / "other.pth")
    assert main(["export", str(ckpt), "--out", str(other), "--force"]) == 2
    assert "training checkpoint" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    out = tmp_path / "bb.pth"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    assert main(["export", str(ckpt), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(out), "--force"]) == 0


def test_export_small_image_backbone_is_not_labelled_torchvision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _training_ckpt(tmp_path / "last.pth", small_images=True)
    for fmt in ("torchvision", "detectron2"):
        out = tmp_path / f"bb.{fmt}"
        assert main(["export", str(ckpt), "--out", str(out), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert f"cannot export as {fmt}" in err and "--format backbone" in err
        assert not out.exists()
    out = tmp_path / "bb.pth"
    assert main(["export", str(ckpt), "--out", str(out), "--format", "backbone"]) == 0
    printed = capsys.readouterr().out
    assert "balfeat backbone state dict" in printed and "small_images=True" in printed
    assert "torchvision state dict" not in printed


def test_export_output_under_a_file_fails_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _training_ckpt(tmp_path / "last.pth")
    assert main(["export", str(ckpt), "--out", str(ckpt / "bb.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("balfeat export: error: argument --out:") and "is a file" in err


def test_export_default_format_labels_a_small_image_backbone_honestly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    small = _training_ckpt(tmp_path / "small.pth", small_images=True)
    assert main(["export", str(small), "--out", str(tmp_path / "a.pth")]) == 0
    printed = capsys.readouterr().out
    assert "not a torchvision backbone" in printed and "small-image stem" in printed
    assert "as a balfeat backbone state dict" in printed
    big = _training_ckpt(tmp_path / "big.pth")
    assert main(["export", str(big), "--out", str(tmp_path / "b.pth")]) == 0
    assert "as a torchvision state dict" in capsys.readouterr().out
    state = torch.load(tmp_path / "b.pth", weights_only=True)
    from torchvision.models import resnet18

    missing = resnet18().load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["fc.bias", "fc.weight"]


def test_os_error_is_one_line_in_user_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from balfeat.data import splits

    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"/c{c}/{i}.jpg {c}\n" for c in range(2) for i in range(3)))
    out = tmp_path / "out.txt"

    def disk_full(path: object, entries: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(splits, "write_split", disk_full)
    argv = ["splits", "make", "balanced", "--pool", str(pool), "--per-class", "2"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"balfeat splits make balanced: error: {out}: no space left on device\n"
