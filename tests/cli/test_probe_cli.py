"""`balfeat probe`, `balfeat evaluate` and `balfeat export` end to end on tiny image files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from balfeat.cli.main import main


@pytest.fixture()
def tiny_imagenet(tmp_path: Path) -> dict[str, Path]:
    """3 classes of 16x16 RGB images (class = dominant colour) with split files, a checkpoint."""
    rng = np.random.default_rng(0)
    root = tmp_path / "img"
    lines: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"train": [8, 4, 2], "val": [3, 3, 3]}
    for part in ("train", "val"):
        for c, n in enumerate(counts[part]):
            d = root / part / f"n0{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 60, size=(16, 16, 3), dtype=np.uint8)
                arr[..., c] += 150
                Image.fromarray(arr).save(d / f"{i}.png")
                lines[part].append(f"{part}/n0{c}/{i}.png {c}")
    (tmp_path / "train.txt").write_text("\n".join(lines["train"]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines["val"]) + "\n")
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("resnet20", in_channels=3)
    model = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    model["head.weight"] = torch.zeros(3, 64)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model, "epoch": 1, "method": "sl", "backbone": "resnet20"}, ckpt)
    (tmp_path / "set_a.txt").write_text("0\n/n02\n")
    return {
        "root": root,
        "train": tmp_path / "train.txt",
        "val": tmp_path / "val.txt",
        "ckpt": ckpt,
        "set_a": tmp_path / "set_a.txt",
    }


def common(d: dict[str, Path]) -> list[str]:
    return [
        "--checkpoint", str(d["ckpt"]), "--dataset", "imagenet", "--data-root", str(d["root"]),
        "--train-split", str(d["train"]), "--val-split", str(d["val"]), "--image-size", "16",
        "--epochs", "3", "--lr", "1.0", "--batch-size", "8", "--device", "cpu", "--quiet",
        "--grouping", "thirds",
    ]  # fmt: skip


def _probe(
    args: list[str], out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict[str, Any]]:
    """Run ``balfeat probe`` with ``args`` into ``out``: what it printed and its results."""
    assert main(["probe", *args, "--out", str(out)]) == 0
    return capsys.readouterr().out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_probe_evaluate_export(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probe"
    args = [*common(tiny_imagenet), "--select-on", "test", "--decoupled", "crt,tau,lws"]
    printed, res = _probe(args, out, capsys)
    assert "many" in printed and "balancedness" in printed
    # every choice made on the list top-1 is measured on is labelled, printed and written
    choices = [line for line in printed.splitlines() if "best epoch" in line or "tau" in line]
    assert len(choices) == 4  # the probe's epoch, cRT's epoch, tau, LWS's epoch
    assert all("selected on test (as the reference)" in line for line in choices)
    assert res["selection"]["label"] == "selected on test (as the reference)"
    assert "tau" in res["selection"]["chosen"] and "val_split" in res["selection"]["on"]
    assert res["selection"]["select_on"] == "test"
    assert res["protocol"] == "fast" and res["backbone"] == "resnet20"
    assert res["groups"]["many"]["classes"] == [0] and res["groups"]["few"]["classes"] == [2]
    assert set(res["decoupled"]) == {"crt", "tau", "lws"}
    assert len(res["decoupled"]["tau"]["sweep"]) == 11
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["train_count"] for r in rows] == ["8", "4", "2"]

    ev = tmp_path / "eval"
    assert main(["evaluate", str(out), "--grouping", "2,3", "--tau-sweep", "--out", str(ev)]) == 0
    res2 = json.loads((ev / "results.json").read_text())
    assert res2["top1"] == pytest.approx(res["top1"])
    assert res2["grouping"]["many_above"] == 2
    assert [r["tau"] for r in res2["tau"]["sweep"]][:2] == [0.0, 0.1]
    assert res2["tau"]["best_tau_label"] == "selected on test (as the reference)"

    exp = tmp_path / "bb.pth"
    assert main(["export", str(tiny_imagenet["ckpt"]), "--out", str(exp)]) == 0
    state = torch.load(exp, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith("head") for k in state)
    assert (
        main(
            [
                "export",
                str(tiny_imagenet["ckpt"]),
                "--out",
                str(tmp_path / "d.pkl"),
                "--format",
                "detectron2",
            ]
        )
        == 2
    )  # CIFAR ResNet: clear error, exit 2


@pytest.mark.slow
def test_probe_unseen_and_reference(tiny_imagenet: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "unseen"
    args = ["probe", *common(tiny_imagenet), "--class-set", str(tiny_imagenet["set_a"])]
    assert main([*args, "--protocol", "reference", "--epochs", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "unseen.json").read_text())
    assert summary["classes_A"] == [0, 2] and summary["classes_B"] == [1]
    a = json.loads((out / "A" / "results.json").read_text())
    assert [r["class"] for r in a["per_class"]] == [0, 2]
    assert a["protocol"] == "reference"


def test_probe_bad_arguments(tiny_imagenet: dict[str, Path], tmp_path: Path) -> None:
    base = ["probe", *common(tiny_imagenet), "--out", str(tmp_path / "x")]
    assert main([*base, "--decoupled", "magic"]) == 2
    assert main([*base, "--protocol", "reference", "--decoupled", "crt"]) == 2
    assert main([*base, "--backbone", "resnet50"]) == 2  # the file holds a resnet20


@pytest.mark.slow
def test_probe_selects_on_carved_val_by_default(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = [*common(tiny_imagenet), "--decoupled", "tau,lws"]
        assert main(["probe", *args, "--out", str(out)]) == 0
        runs.append(json.loads((out / "results.json").read_text()))
    printed = capsys.readouterr().out
    assert "selected on test" not in printed and "selected on val" in printed
    sel = runs[0]["selection"]
    assert sel["select_on"] == "val" and "label" not in sel and "carved" in sel["on"]
    carved = sel["carved"]  # 8/4/2 training images: one per class carved off, seeded
    assert carved["per_class"] == [1, 1, 1] and carved["seed"] == 0
    assert carved["images"] == 3 and carved["trained_on"] == 11
    assert runs[1]["selection"] == sel  # the same seed carves the same images
    assert sum(r["test_count"] for r in runs[0]["per_class"]) == 9  # on the whole test list
    assert "select_sweep" in runs[0]["decoupled"]["tau"]
    seeded = tmp_path / "seed1"
    assert main(["probe", *common(tiny_imagenet), "--seed", "1", "--out", str(seeded)]) == 0
    other = json.loads((seeded / "results.json").read_text())["selection"]["carved"]
    assert other["seed"] == 1


@pytest.mark.slow
def test_probe_select_on_last_chooses_nothing(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*common(tiny_imagenet), "--select-on", "last", "--decoupled", "tau,lws"]
    printed, res = _probe(args, tmp_path / "last", capsys)
    assert "selected on" not in printed and "no tau chosen" in printed
    assert res["best_epoch"] == 3 and res["selection"]["chosen"] == "nothing"
    assert res["decoupled"]["tau"]["best_tau"] is None
    assert len(res["decoupled"]["tau"]["sweep"]) == 11


def test_probe_select_split_refusals(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["probe", *common(tiny_imagenet), "--out", str(tmp_path / "x")]
    missing = str(tmp_path / "no_val_list.txt")  # only a test list exists
    assert main([*base, "--select-split", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "select_split" in err[0].replace("-", "_") and missing in err[0]
    assert main([*base, "--select-on", "test", "--select-split", str(tiny_imagenet["train"])]) == 2
    assert "select_split" in capsys.readouterr().err.replace("-", "_")


def test_select_split_missing_refused_before_work(
    tiny_imagenet: dict[str, Path], tmp_path: Path
) -> None:
    """The API path (no loader): a missing named list is refused naming the key."""
    from balfeat.classify.job import ProbeOptions
    from balfeat.classify.selection import prepare_selection
    from balfeat.errors import ConfigError

    opts = ProbeOptions(dataset="imagenet", out=str(tmp_path / "y"))
    opts.select_split = str(tmp_path / "gone.txt")
    with pytest.raises(ConfigError, match=r"^probe\.select_split: no such file"):
        prepare_selection(opts, None, None, None)


@pytest.mark.slow
def test_probe_selects_on_a_named_list(tiny_imagenet: dict[str, Path], tmp_path: Path) -> None:
    lines = tiny_imagenet["train"].read_text().splitlines()
    keep = [ln for ln in lines if not ln.split("/")[-1].startswith("0.")]  # 0.png of each class
    held = [ln for ln in lines if ln.split("/")[-1].startswith("0.")]
    (tmp_path / "fit.txt").write_text("\n".join(keep) + "\n")
    (tmp_path / "sel.txt").write_text("\n".join(held) + "\n")
    base = ["probe", *common(tiny_imagenet), "--train-split", str(tmp_path / "fit.txt")]
    out = tmp_path / "named"
    assert main([*base, "--select-split", str(tmp_path / "sel.txt"), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["selection"]["select_on"] == "val" and "sel.txt" in res["selection"]["on"]
    assert "carved" not in res["selection"] and "label" not in res["selection"]
    # a named list that shares images with the training list is refused
    overlap = [*base[:-1], str(tiny_imagenet["train"]), "--select-split", str(tmp_path / "sel.txt")]
    assert main([*overlap, "--out", str(tmp_path / "bad")]) == 2
