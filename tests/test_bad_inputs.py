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
        ("/n01/9.png 1_0\n", r"train\.txt:7: label '1_0' is not an integer"),
        ("/n02/1.png 1\n", r"train\.txt:7: '/n02/1\.png' is listed twice \(first at line 4\)"),
    ],
    ids=["no-label", "non-integer-label", "underscore-label", "duplicate"],
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


# --- inputs no issue listed: text encodings, empty files, folders, YAML, devices, studies -------


def _probe_args(root: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    args = ["probe", "--quiet", "--backbone", "resnet8", "--dataset", "imagenet"]
    args += ["--data-root", str(root), "--train-split", str(train), "--val-split", str(val)]
    return [*args, "--image-size", "16", "--device", "cpu", "--epochs", "1", "--out", str(out)]


def test_split_file_not_utf8_names_line_and_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    split = tmp_path / "train.txt"
    # Latin-1 'é' in a file name on line 3: before, a UnicodeDecodeError traceback (exit 1)
    split.write_bytes(text.encode().replace(b"/n02/0.png", b"/n02/caf\xe9.png"))
    rc, _, err, out = _pretrain(
        tmp_path, capsys, *IMAGENET, f"data.root={root}", f"data.train_split={split}"
    )
    assert rc == 2
    line = _one_error_line(err)
    assert "train.txt:3: byte 0xe9 is not UTF-8 text" in line and "save the file as UTF-8" in line
    assert not out.exists()


@pytest.mark.parametrize("reader", ["read_split", "read_class_set", "read_class_counts"])
def test_every_text_reader_refuses_non_utf8(tmp_path: Path, reader: str) -> None:
    from balfeat.data import splits

    f = tmp_path / "f.txt"
    f.write_bytes("/a/x.png 0\n".encode("utf-16"))  # a BOM of 0xff 0xfe: UTF-16
    call = getattr(splits, reader)
    with pytest.raises(SplitFormatError, match=r"f\.txt:1: byte 0xff .*looks like UTF-16"):
        call(f, 3) if reader == "read_class_counts" else call(f)


def test_empty_split_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, _ = data
    rc, _, err, out = _split_run(tmp_path, capsys, root, "# no entries yet\n\n")
    assert rc == 2
    line = _one_error_line(err)
    assert "split file" in line and "train.txt' holds no entries" in line
    assert not out.exists()


@pytest.mark.parametrize("empty", ["train", "val"])
def test_probe_with_an_empty_split_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str], empty: str
) -> None:
    root, text = data
    full, none = tmp_path / "full.txt", tmp_path / "none.txt"
    full.write_text(text)
    none.write_text("")
    train, val = (none, full) if empty == "train" else (full, none)
    out = tmp_path / "probe"
    # before: an empty val split was a torch.cat traceback, an empty train split blamed the val
    # file ("label 0 >= num_classes=0")
    assert main(_probe_args(root, train, val, out)) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "none.txt' holds no entries" in line
    assert not out.exists()


def test_empty_group_counts_file_is_refused(tmp_path: Path) -> None:
    from balfeat.data.splits import read_class_counts

    f = tmp_path / "counts.txt"
    f.write_text("# counts\n\n")
    # before: every class counted 0, so all of them few-shot, without a word
    with pytest.raises(DataError, match="holds no counts"):
        read_class_counts(f, 3, "--group-counts")


def test_probe_val_split_numbering_classes_differently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text(text)
    # the same images, classes n02/n03 swapped: every n02/n03 image scored as the other class
    val.write_text(text.replace(" 1\n", " x\n").replace(" 2\n", " 1\n").replace(" x\n", " 2\n"))
    out = tmp_path / "probe"
    assert main(_probe_args(root, train, val, out)) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "val.txt:3: label 2 is class folder 'n02'" in line and "labels 'n02' as 1" in line
    assert not out.exists()


def test_probe_val_folder_missing_a_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    import shutil

    root, _ = data
    val_root = tmp_path / "val"
    shutil.copytree(root, val_root)
    shutil.rmtree(val_root / "n02")  # the scan would label n03 as 1 (n02's label in training)
    out = tmp_path / "probe"
    args = ["probe", "--quiet", "--backbone", "resnet8", "--dataset", "imagenet", "--data-root"]
    args += [str(root), "--val-root", str(val_root), "--image-size", "16", "--device", "cpu"]
    assert main([*args, "--epochs", "1", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "(folder scan): label 1 is class folder 'n03'" in line
    assert not out.exists()


# ------------------------------------------------------------------------------ image folders
def test_folder_scan_refuses_a_class_folder_without_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, _ = data
    (root / "n02b").mkdir()  # sorts between n02 and n03: n03 would silently become label 3
    (root / "n02b" / "readme.txt").write_text("todo")
    rc, _, err, out = _pretrain(tmp_path, capsys, *IMAGENET, f"data.root={root}")
    assert rc == 2
    line = _one_error_line(err)
    assert "1 class folder(s) hold no image" in line and "'n02b'" in line
    assert not out.exists()


def test_folder_scan_skips_hidden_entries_and_warns_about_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from balfeat.data.folder_scan import scan_image_folder

    root = tmp_path / "data"
    _images(root)
    (root / ".ipynb_checkpoints").mkdir()  # was a class of its own (label 0)
    Image.new("RGB", (4, 4)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "n01" / "._0.png").write_bytes(b"AppleDouble")  # macOS metadata, not an image
    (root / "n01" / "notes.txt").write_text("hi")
    entries = scan_image_folder(root)
    assert sorted({e.label for e in entries}) == [0, 1, 2] and len(entries) == 6
    assert not any("ipynb" in e.path or "._" in e.path for e in entries)
    assert "skipped 1 file(s)" in caplog.text and "n01/notes.txt" in caplog.text


def test_folder_scan_warns_about_numbered_class_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from balfeat.data.folder_scan import scan_image_folder

    for name in ("1", "2", "10"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "a.png")
    labels = {e.path.split("/")[1]: e.label for e in scan_image_folder(tmp_path)}
    assert labels == {"1": 0, "10": 1, "2": 2}  # ImageFolder's order, kept
    assert "label 1 is folder '10'" in caplog.text


def test_unreadable_image_of_a_folder_scan_names_the_folder(tmp_path: Path) -> None:
    from balfeat.data.datasets import FOLDER_SCAN, SplitImageDataset
    from balfeat.data.folder_scan import scan_image_folder

    root = tmp_path / "data"
    _images(root)
    (root / "n02" / "1.png").write_bytes(b"\x89PNG truncated")
    ds = SplitImageDataset(root, scan_image_folder(root), source=FOLDER_SCAN.format(root))
    with pytest.raises(DataError, match=r"data \(folder scan\): cannot read image .*n02/1\.png"):
        ds[3]


def test_data_root_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    f = tmp_path / "train.txt"
    f.write_text(data[1])
    rc, _, err, out = _pretrain(tmp_path, capsys, *IMAGENET, f"data.root={f}")
    assert rc == 2
    assert "train.txt' is a file" in _one_error_line(err)
    assert not out.exists()


# ------------------------------------------------------------------------------ array files
@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"imgs": "x", "labels": "y"}, r"array\(s\) images missing \(it holds imgs, labels\)"),
        ({"images": "x", "labels": "yf"}, r"labels\[1\] = 0\.5 is not a whole number"),
        ({"images": "x", "labels": "yneg"}, r"labels\[0\] = -1 is negative"),
        ({"images": "xf", "labels": "y"}, "'images' must be uint8 images"),
        (None, "a .npy file holds one array"),
    ],
    ids=["missing-key", "float-labels", "negative-label", "float-images", "npy"],
)
def test_array_dataset_file_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arrays: dict | None, message: str
) -> None:
    import numpy as np

    made = {
        "x": np.zeros((8, 16, 16), np.uint8),
        "xf": np.zeros((8, 16, 16), np.float32),
        "y": np.arange(8) % 2,
        "yf": np.array([0, 0.5, 1, 1, 0, 0, 1, 1]),  # before: truncated to 0 without a word
        "yneg": np.arange(8) % 2 - 1,
    }
    if arrays is None:
        f = tmp_path / "a.npy"
        np.save(f, made["x"])
    else:
        f = tmp_path / "a.npz"
        np.savez(f, **{k: made[v] for k, v in arrays.items()})
    rc, _, err, out = _pretrain(tmp_path, capsys, *SYNTH, "data.dataset=array", f"data.root={f}")
    assert rc == 2
    line = _one_error_line(err)
    assert re.search(message, line) and str(f) in line
    assert not out.exists()


# ------------------------------------------------------------------------------ YAML, devices
def test_yaml_key_given_twice_names_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("optim:\n  epochs: 100\n  batch_size: 4\n  epochs: 1\n")  # which one counts?
    rc, _, err, out = _pretrain(tmp_path, capsys, "--config", str(cfg), *SYNTH)
    assert rc == 2
    line = _one_error_line(err)
    assert "exp.yaml" in line and "key 'epochs' is given twice" in line
    assert "line 2 and line 4" in line
    assert not out.exists()


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    from balfeat.typed_config import load_yaml_text

    text = "base: &b {epochs: 1, batch_size: 4}\noptim:\n  <<: *b\n  epochs: 2\n"
    assert load_yaml_text(text)["optim"] == {"epochs": 2, "batch_size": 4}


def test_empty_config_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("# to fill in\n")  # before: trained on the defaults without a word
    rc, _, err, out = _pretrain(tmp_path, capsys, "--config", str(cfg), *SYNTH)
    assert rc == 2
    assert "exp.yaml' is empty (no keys)" in _one_error_line(err)
    assert not out.exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    rc, _, err, out = _pretrain(tmp_path, capsys, *SYNTH, f"run.device={device}")
    assert rc == 2  # before: torch's RuntimeError traceback, exit 1
    assert f"unknown device '{device}'; use auto, cpu, cuda or cuda:N" in _one_error_line(err)
    assert not out.exists()


# ------------------------------------------------------------------------------ class sets
def test_empty_class_set_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    cs = tmp_path / "clsset.txt"
    cs.write_text("\n# none\n")
    rc, _, err, out = _split_run(tmp_path, capsys, root, text, f"data.class_set={cs}")
    assert rc == 2
    assert "clsset.txt' lists no class" in _one_error_line(err)
    assert not out.exists()


def test_class_set_errors_give_the_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    from balfeat.data.catalog import read_class_set_labels

    root, text = data
    cs = tmp_path / "clsset.txt"
    cs.write_text("# set A\n\n/n01\n/n99\n")
    rc, _, err, _ = _split_run(tmp_path, capsys, root, text, f"data.class_set={cs}")
    assert rc == 2 and "'n99' (" in err and "clsset.txt:4)" in err  # was ":2"
    cs.write_text("# set A\n0\n7\n")  # label 7 of 3 classes: was accepted
    with pytest.raises(SplitFormatError, match=r"clsset\.txt:3: label 7 is not a class"):
        read_class_set_labels(str(cs), ["n01", "n02", "n03"])


# ------------------------------------------------------------------------------ resume
def test_resume_after_the_number_of_classes_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[Path, str]
) -> None:
    root, text = data
    rc, _, err, out = _split_run(tmp_path, capsys, root, text)
    assert rc == 0, err
    (root / "n04").mkdir()
    Image.new("RGB", (16, 16)).save(root / "n04" / "0.png")
    (tmp_path / "train.txt").write_text(text + "/n04/0.png 3\n")  # the same file, edited
    before = (out / "last.pth").read_bytes()
    split = f"data.train_split={tmp_path / 'train.txt'}"
    args = ["--resume", *IMAGENET, f"data.root={root}", split, f"run.output_dir={out}"]
    rc = main(["pretrain", "--quiet", *args])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "trained on 3 classes and the training data now has 4" in line
    assert (out / "last.pth").read_bytes() == before


# ------------------------------------------------------------------------------ studies / demo
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("family.sets={a: .nan}", r"family\.sets\.a must be a finite ratio"),
        ("family.sets={a: .inf}", r"family\.sets\.a must be a finite ratio"),
        ("methods={'../x': {method: {name: sl}}}", "name '../x' cannot name a folder"),
        ("family.sets={'a__b': 2}", "name 'a__b' cannot name a folder"),
        ("methods={sl: {method: {name: sl}, run: {seed: 3}}}", r"methods\.sl\.run\.seed"),
        ("base={run: {output_dir: x}}", r"base\.run\.output_dir: a study sets"),
        ("grouping=halves", "grouping: cannot parse shot grouping 'halves'"),
        ("probes={fast: {lr: .nan}}", r"probes\.fast\.lr must be a finite number > 0"),
        ("probes={fast: {epochs: 5, milestones: [60]}}", r"milestones \[60\] must lie below"),
    ],
    ids=[
        "nan",
        "inf",
        "path",
        "double-underscore",
        "run-seed",
        "output-dir",
        "grouping",
        "probe-lr",
        "milestone",
    ],
)
def test_study_values_checked_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    study = Path(__file__).parents[1] / "configs" / "study" / "fmnist_demo.yaml"
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), str(study), override]) == 2
    assert re.search(message, _one_error_line(capsys.readouterr().err, "study"))
    assert not out.exists()


def test_demo_tiny_and_full_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--full", "--out", str(out)]) == 2  # was: --full ignored
    assert "not allowed with argument" in capsys.readouterr().err
    assert not out.exists()
