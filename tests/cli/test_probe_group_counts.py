# ruff: noqa: F811  (the tiny_imagenet fixture is imported from test_probe_cli)
"""Probe and evaluate group many/medium/few by the checkpoint's own training counts (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_probe_cli import common, tiny_imagenet  # noqa: F401  (fixture)

from balfeat.cli.main import main
from balfeat.data.imbalance import exponential_profile

#: An in-memory long-tailed pre-training set: 3 synthetic classes of 16x16 RGB images,
#: exponential profile from 150 images down to 15 (many / medium / few at 100 and 20).
LONG_TAILED = [
    "data.dataset=synthetic", "data.synthetic_size=450", "data.num_classes=3",
    "data.image_size=16", "data.channels=3", "data.imbalance_ratio=10", "data.per_class=150",
    "data.augmentation=none", "model.backbone=resnet20", "method.name=sl",
    "optim.batch_size=8", "run.max_steps=1", "run.device=cpu", "run.progress=false",
]  # fmt: skip


@pytest.fixture()
def long_tailed_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["pretrain", "--quiet", *LONG_TAILED, f"run.output_dir={run}"]) == 0
    return run


def _probe_args(d: dict[str, Path], run: Path) -> list[str]:
    args = [a if a != str(d["ckpt"]) else str(run) for a in common(d)]
    return [*args[:-2], "--grouping", "default"]  # the paper's 100/20 thresholds


def _group_classes(res: dict[str, Any]) -> list[list[int]]:
    """The classes of the many, medium and few groups of a results dict."""
    return [res["groups"][g]["classes"] for g in ("many", "medium", "few")]


def test_checkpoint_stores_its_training_counts(long_tailed_run: Path) -> None:
    state = torch.load(long_tailed_run / "last.pth", weights_only=False)
    entry = state["train_counts"]
    assert entry["counts"] == exponential_profile(3, 150, 10) == [150, 47, 15]
    assert entry["images"] == 212
    assert entry["source"] == "synthetic, exponential profile ratio 10, 150 per class, seed 0"


def test_probe_groups_by_the_checkpoint_counts(
    tiny_imagenet: dict[str, Path],
    long_tailed_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The probe's own split has 8/4/2 images: by those every class is few and medium/many
    read n/a; the checkpoint's 150/47/15 give one class in each group, and the probe says so."""
    out = tmp_path / "p"
    assert main(["probe", *_probe_args(tiny_imagenet, long_tailed_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    source = (
        "the checkpoint's training counts "
        "(synthetic, exponential profile ratio 10, 150 per class, seed 0)"
    )
    assert f"groups from {source}\n" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["group_source"] == source
    assert _group_classes(res) == [[0], [1], [2]]
    assert res["probe_train_counts"] == [8, 4, 2]
    assert res["balancedness"] is not None
    # evaluate regroups the saved logits by the same counts and says where they come from
    assert main(["evaluate", str(out)]) == 0
    assert f"groups from {source}\n" in capsys.readouterr().out
    ev = json.loads((out / "evaluate" / "results.json").read_text())
    assert _group_classes(ev) == [[0], [1], [2]]
    # --group-counts still overrides the checkpoint's counts
    counts = tmp_path / "counts.txt"
    counts.write_text("5\n500\n50\n")
    over = tmp_path / "q"
    args = [*_probe_args(tiny_imagenet, long_tailed_run), "--group-counts", str(counts)]
    assert main(["probe", *args, "--out", str(over)]) == 0
    res = json.loads((over / "results.json").read_text())
    assert res["group_source"] == f"--group-counts {counts}"
    assert _group_classes(res) == [[1], [2], [0]]


def test_an_older_checkpoint_falls_back_with_a_hint(
    tiny_imagenet: dict[str, Path],
    long_tailed_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    older = tmp_path / "older.pth"
    state = torch.load(long_tailed_run / "last.pth", weights_only=False)
    del state["train_counts"]  # as checkpoints were written before they carried counts
    torch.save(state, older)
    out = tmp_path / "p"
    assert main(["probe", *_probe_args(tiny_imagenet, older), "--out", str(out)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("groups"))
    assert line.startswith("groups from the probe's own training counts: the checkpoint holds no")
    assert "pass --group-counts PRETRAIN_SPLIT" in line
    res = json.loads((out / "results.json").read_text())
    assert _group_classes(res) == [[], [], [0, 1, 2]]


def test_exports_leave_the_counts_out(long_tailed_run: Path, tmp_path: Path) -> None:
    """The torchvision and detectron2 files hold the backbone alone (the counts are balfeat's)."""
    import pickle

    from balfeat.models.backbones import build_backbone
    from balfeat.models.export import export_backbone, export_detectron2, export_torchvision

    state = torch.load(long_tailed_run / "last.pth", weights_only=False)
    bb = build_backbone("resnet18", small_images=False, in_channels=3)
    rn18 = {**state, "model": {f"backbone.{k}": v for k, v in bb.state_dict().items()}}
    rn18.update(backbone="resnet18", config={})
    assert rn18["train_counts"]["counts"] == [150, 47, 15]
    for export in (export_torchvision, export_backbone):
        export(rn18, tmp_path / f"{export.__name__}.pth")
        saved = torch.load(tmp_path / f"{export.__name__}.pth", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in saved.values())
        assert set(saved) == set(bb.state_dict())
    export_detectron2(rn18, tmp_path / "d2.pkl")
    with open(tmp_path / "d2.pkl", "rb") as fh:
        det = pickle.load(fh)
    assert set(det) == {"model", "__author__", "matching_heuristics"}
    assert not any("count" in k for k in det["model"])
