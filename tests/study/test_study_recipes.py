"""The study recipes of configs/study/ (issue 21): each is parsed and ``--plan``ned.

The ImageNet plans run without ImageNet: the sets' sizes come from the split lists when present
and from ``folder.set_sizes`` otherwise, and the timing runs on synthetic images of the cells'
shape. The measured plan here shrinks that shape (``optim.batch_size``, ``data.image_size``,
``model.backbone``, ``method.K``) so it runs in seconds on a CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from balfeat.cli.main import main
from balfeat.errors import ConfigError
from balfeat.study.jobs import cell_jobs, pretrain_command
from balfeat.study.spec import load_study, study_from_mapping

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "configs" / "study"

#: recipe -> (cells, methods' pre-training method names)
RECIPES = {
    "imagenet_lt_family.yaml": (18, {"sl", "moco_v1", "kcl"}),
    "imagenet_unseen_classes.yaml": (3, {"sl", "moco_v1", "kcl"}),
    "cifar10_lt_successors.yaml": (15, {"kcl", "supcon_inbatch", "tsc", "bcl", "paco"}),
    "cifar100_lt_successors.yaml": (15, {"kcl", "supcon_inbatch", "tsc", "bcl", "paco"}),
}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the recipes name their method files relative to the repository


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_parses_and_plans(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells, methods = RECIPES[name]
    spec, over = load_study(STUDIES / name)
    jobs = cell_jobs(spec, tmp_path, over)
    assert len(jobs) == cells
    assert {j.config.method.name for j in jobs} == methods
    out = tmp_path / "plan"
    assert (
        main(["study", "--plan", "--plan-steps", "0", "--out", str(out), str(STUDIES / name)]) == 0
    )
    text = capsys.readouterr().out
    assert len(re.findall(r"^\[\d+\] ", text, flags=re.M)) == cells
    assert text.count("pretrain --config") == cells
    for job in jobs:  # the plan wrote the files its commands name
        assert (out / job.cdir.relative_to(tmp_path) / "pretrain.yaml").is_file()


def test_imagenet_family_values(tmp_path: Path) -> None:
    spec, over = load_study(STUDIES / "imagenet_lt_family.yaml")
    jobs = {(j.method, j.set_name): j for j in cell_jobs(spec, tmp_path, over)}
    kcl = jobs["kcl", "lt"].config
    assert (kcl.method.K, kcl.method.T, kcl.method.posk) == (65536, 0.07, 6)  # type: ignore[attr-defined]
    assert kcl.optim.weight_decay == 0.0005 and kcl.optim.epochs == 200
    assert kcl.data.train_split.endswith("ImageNet_LT_train.txt")
    assert jobs["moco_v1", "lt0"].config.data.train_split.endswith("imagenet_100k_train.txt")
    assert pretrain_command(spec, jobs["sl", "lt4"])[:4] == [
        "torchrun", "--standalone", "--nproc_per_node", "8"
    ]  # fmt: skip
    probe = jobs["sl", "lt8"].probes["reference"]
    assert (probe.protocol, probe.epochs, probe.lr, probe.milestones) == (
        "reference", 100, 30.0, [60, 80]
    )  # fmt: skip
    assert probe.group_counts.endswith("ImageNet_LT_train.txt")  # grouped by LT in every row
    assert probe.train_split.endswith("imagenet_100k_train.txt")


@pytest.mark.slow
def test_measured_plan_without_imagenet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = [
        "optim.batch_size=4", "data.image_size=32", "model.backbone=resnet8",
        "model.small_images=true", "method.K=64", "run.device=cpu",
    ]  # fmt: skip
    args = ["study", "--plan", "--plan-steps", "1", "--out", str(tmp_path)]
    assert main([*args, str(STUDIES / "imagenet_lt_family.yaml"), *tiny]) == 0
    text = capsys.readouterr().out
    assert "kcl on lt, seed 0: 115846 images, 5792400 steps of batch 4" in text  # 200 x 28962
    per = dict(re.findall(r"(\w+) ([\d.e+-]+) s/step", text))
    assert set(per) == {"sl", "moco_v1", "kcl"}
    assert re.search(r"total: est\. [\d.e+]+ device-hours of pre-training on cpu", text)


def test_torchrun_needs_a_job_study() -> None:
    with pytest.raises(ConfigError, match="launcher: torchrun"):
        study_from_mapping({"dataset": "synthetic", "launcher": "torchrun", "methods": {"sl": {}}})


def test_folder_study_errors() -> None:
    base = {"dataset": "image-folder", "methods": {"sl": {}}}
    with pytest.raises(ConfigError, match=r"folder\.sets is empty"):
        study_from_mapping(base)
    with pytest.raises(ConfigError, match=r"folder\.grouping_set 'x' is not one of"):
        study_from_mapping(
            {**base, "folder": {"root": "r", "sets": {"a": "a.txt"}, "grouping_set": "x"}}
        )


def test_collect_names_missing_in_memory_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("dataset: synthetic\nmethods: {sl: {method: {name: sl}}}\n")
    assert main(["study", "--collect", "--out", str(tmp_path / "o"), str(file)]) == 1
    out = capsys.readouterr().out
    assert "missing: sl on balanced, seed 0" in out and "missing: sl on exp100" in out
    assert not (tmp_path / "o" / "cells").exists()  # nothing trained


def test_changed_config_of_a_trained_cell_is_refused(tmp_path: Path) -> None:
    from balfeat.study.jobs import write_job_files

    spec, over = load_study(STUDIES / "cifar10_lt_successors.yaml")
    job = cell_jobs(spec, tmp_path, over)[0]
    write_job_files(job)
    write_job_files(job)  # the same config again: fine
    run = Path(job.config.run.output_dir)
    run.mkdir(parents=True)
    (run / "last.pth").write_bytes(b"")  # a checkpoint is there
    job.config.optim.epochs += 1
    with pytest.raises(ConfigError, match="another pre-training configuration"):
        write_job_files(job)
