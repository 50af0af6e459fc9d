"""The paper's study on a tiny PNG image folder with reference-format split lists (issue 21).

One study (SL on a balanced and a long-tailed set of 10 classes, grouped by the long-tailed set's
counts, a fast probe on a balanced list) runs end to end: in-process (``launcher: local``), as
``balfeat pretrain``/``balfeat probe`` commands collected with ``--collect``, and with
``launcher: torchrun`` on 2 gloo processes. The class-split protocol runs on a 5/5 split.

"Equals": the in-process study and the collected separate commands give the same table, every
value bit for bit (the same code, seeds and files in one process). Two torchrun processes give a
different model - each rank's BatchNorm normalises its own half of the batch and the all-reduce
sums gradients in another order - so that table equals the in-process one in its rows (method,
set, seed, probe), its pre-training counts and its many/medium/few groups, and not in accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from study_image_folder import build_image_folder, lt_counts

from balfeat.cli.main import main
from balfeat.engine.checkpoint import load_checkpoint
from balfeat.study.report import read_rows
from balfeat.study.spec import load_study

#: Row fields that name a run's own timing or paths, not its results.
NOT_RESULTS = ("cell_seconds", "knn_seconds", "seconds", "own_seconds")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    build_image_folder(root)
    return root


def study_file(root: Path, path: Path, **extra: Any) -> Path:
    """A study over the folder's lists (one epoch of SL, a 2-epoch fast probe)."""
    study = {
        "name": "image-folder family",
        "dataset": "image-folder",
        "output_dir": str(path.parent / "out"),
        "grouping": "thirds",
        "folder": {
            "root": str(root / "train"),
            "split_dir": str(root),
            "sets": {"bal": "bal.txt", "lt": "lt.txt"},
            "grouping_set": "lt",
            "probe_train": "probe.txt",
            "test": "test.txt",
            "test_root": str(root),
        },
        "base": {
            "data": {"image_size": 16, "channels": 3, "augmentation": "supervised"},
            "model": {"backbone": "resnet8", "small_images": True},
            "optim": {"epochs": 1, "batch_size": 16, "base_lr": 0.1},
            "run": {"device": "cpu", "keep_last": 1},
        },
        "methods": {"sl": {"method": {"name": "sl"}}},
        "probes": {"fast": {"epochs": 2, "lr": 1.0, "batch_size": 32}},
        **extra,
    }
    path.write_text(yaml.safe_dump(study))
    return path


def table(out: Path) -> list[dict[str, Any]]:
    """The study's rows as written in results.jsonl, without timings."""
    rows = read_rows(out)
    return [{k: v for k, v in r.items() if k not in NOT_RESULTS} for r in rows]


@pytest.fixture(scope="module")
def local_run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study run in-process (``launcher: local``); its output folder."""
    work = tmp_path_factory.mktemp("local")
    out = work / "out"
    assert (
        main(["study", "--quiet", "--out", str(out), str(study_file(folder, work / "s.yaml"))]) == 0
    )
    return out


@pytest.mark.slow
def test_local_study_table(local_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = table(local_run)
    assert [(r["method"], r["set"], r["protocol"]) for r in rows] == [
        ("sl", "bal", "fast"),
        ("sl", "lt", "fast"),
    ]
    assert rows[0]["train_counts"] == [12] * 10
    assert rows[1]["train_counts"] == lt_counts(24, 12.0)
    assert rows[1]["imbalance_ratio"] == pytest.approx(24 / 2)
    assert rows[0]["groups"] == rows[1]["groups"]  # grouped by LT's counts in every row
    assert "lt.txt" in str(rows[0]["group_source"])
    cell = local_run / "cells" / "sl__lt" / "seed0"
    assert (cell / "pretrain.yaml").is_file() and (cell / "fast.probe.yaml").is_file()
    assert load_checkpoint(cell / "pretrain" / "last.pth")["config"]["data"][
        "train_split"
    ].endswith("lt.txt")


@pytest.mark.slow
def test_collect_separate_commands_equals_study(
    folder: Path, local_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = study_file(folder, tmp_path / "s.yaml")
    out = tmp_path / "out"
    assert main(["study", "--plan", "--plan-steps", "0", "--out", str(out), str(file)]) == 0
    plan = capsys.readouterr().out
    assert plan.count("balfeat pretrain --config") == 2 and "probe --config" in plan
    assert main(["study", "--collect", "--out", str(out), str(file)]) == 1  # nothing ran yet
    assert "missing: sl on bal, seed 0" in capsys.readouterr().out
    for s in ("bal", "lt"):  # the commands the plan printed, as a user runs them
        cell = out / "cells" / f"sl__{s}" / "seed0"
        assert main(["pretrain", "--quiet", "--config", str(cell / "pretrain.yaml")]) == 0
        assert main(["probe", "--config", str(cell / "fast.probe.yaml")]) == 0
        if s == "bal":  # half done: the table of what exists, the missing cell named
            capsys.readouterr()
            assert main(["study", "--collect", "--out", str(out), str(file)]) == 0
            assert "missing: sl on lt, seed 0" in capsys.readouterr().out
            assert [r["set"] for r in table(out)] == ["bal"]
    capsys.readouterr()
    assert main(["study", "--collect", "--out", str(out), str(file)]) == 0
    assert "missing" not in capsys.readouterr().out
    assert table(out) == table(local_run)


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_same_table_shape(
    folder: Path, local_run: Path, tmp_path: Path
) -> None:
    file = study_file(folder, tmp_path / "s.yaml", launcher="torchrun", nproc_per_node=2)
    out = tmp_path / "out"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert main(["study", "--quiet", "--out", str(out), str(file)]) == 0
    ckpt = load_checkpoint(out / "cells" / "sl__lt" / "seed0" / "pretrain" / "last.pth")
    assert ckpt["world_size"] == 2
    two, one = table(out), table(local_run)
    keys = ("method", "set", "seed", "protocol", "train_counts", "groups", "imbalance_ratio")
    assert [{k: r[k] for k in keys} for r in two] == [{k: r[k] for k in keys} for r in one]
    assert all(0 <= r["top1"] <= 100 for r in two)


@pytest.mark.slow
def test_class_split_probes_both_halves(folder: Path, tmp_path: Path) -> None:
    file = study_file(folder, tmp_path / "s.yaml")
    spec_over = ["folder.sets={lt: lt.txt}", "folder.class_set=clsset.txt"]
    spec, _ = load_study(file, spec_over)
    assert spec.folder.class_set == "clsset.txt"
    out = tmp_path / "out"
    assert main(["study", "--quiet", "--out", str(out), str(file), *spec_over]) == 0
    rows = table(out)
    assert [r["protocol"] for r in rows] == ["fast.A", "fast.B"]
    ckpt = load_checkpoint(out / "cells" / "sl__lt" / "seed0" / "pretrain" / "last.pth")
    assert ckpt["config"]["data"]["class_set"].endswith("clsset.txt")
    assert [len(r["per_class_accuracy"]) for r in rows] == [5, 5]
