# ruff: noqa: F811  (the tiny_imagenet fixture is imported from test_probe_cli)
"""One-line errors that name what to do (issue 24, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_errors import one_error_line as _one_line
from test_probe_cli import common, tiny_imagenet  # noqa: F401  (fixture)

from balfeat.cli.main import main


def test_probe_bad_image_advises_what_probe_can_do(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_imagenet["root"] / "train" / "n01" / "0.png").write_bytes(b"not an image")
    capsys.readouterr()
    assert main(["probe", *common(tiny_imagenet), "--out", str(tmp_path / "p")]) != 0
    line = _one_line(capsys)
    assert "0.png" in line and "remove its line from the split file" in line
    assert "skip_bad_images" not in line  # an option probe does not have


def test_channels_that_the_dataset_does_not_have_is_refused_at_the_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["pretrain", "data.dataset=fashion-mnist", "data.channels=3", f"run.output_dir={out}"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "data.channels=3" in line and "set data.channels=1" in line
    assert not out.exists()


def test_a_quiet_probe_still_prints_one_line_per_stage(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*common(tiny_imagenet), "--decoupled", "crt", "--out", str(tmp_path / "p")]
    assert "--quiet" in args
    assert main(["probe", *args]) == 0
    stages = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("probe: ")]
    assert [s.split()[1] for s in stages] == [
        "loading",
        "reading",
        "training",
        "evaluating",  # chosen on the carved selection split (select_on val), then tested
        "decoupled",
        "writing",
    ]
    assert "features extracted first" in stages[2]  # the fast protocol's long silent part


def test_a_quiet_unseen_class_probe_prints_its_stages_too(
    tiny_imagenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*common(tiny_imagenet), "--class-set", str(tiny_imagenet["set_a"])]
    assert main(["probe", *args, "--out", str(tmp_path / "u")]) == 0
    stages = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("probe: ")]
    assert [s.split()[1] for s in stages] == ["loading", "reading", "training", "writing"]
    assert "class set A (2 classes)" in stages[2]
