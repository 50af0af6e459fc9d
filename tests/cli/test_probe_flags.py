"""`balfeat probe`'s flags come from ProbeOptions' fields; KEY=VALUE may follow any option."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from balfeat.classify.job import ProbeOptions
from balfeat.cli.main import build_parser, main
from balfeat.cli.probe import job_from_args

# configs/study_fmnist_demo.yaml, or configs/study/fmnist_demo.yaml in the by-job layout
STUDY = min(
    (Path(__file__).parents[2] / "configs").rglob("*fmnist_demo.yaml"), key=lambda p: len(p.parts)
)


def _probe_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["probe"]


def test_every_probe_field_is_a_flag_whose_help_states_its_default() -> None:
    actions = {a.dest: a for a in _probe_parser()._actions}
    for f in dataclasses.fields(ProbeOptions):
        assert f.name in actions, f"no flag for ProbeOptions.{f.name}"
        assert "(default: " in str(actions[f.name].help), f.name
    assert actions["bias"].option_strings == ["--no-bias"]
    assert "(default: 30.0; > 0)" in str(actions["lr"].help)
    assert actions["protocol"].choices == ("fast", "reference")


def test_flags_set_the_fields_over_files_and_overrides(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"probe": {"lr": 3.0, "epochs": 7, "backbone": "resnet20"}}))
    argv = ["probe", "--config", str(job), "probe.epochs=9", "--no-bias", "--lr", "2"]
    args = build_parser().parse_args([*argv, "--schedule", "cosine", "--out", str(tmp_path / "o")])
    opts = job_from_args(args)
    assert (opts.lr, opts.epochs, opts.bias, opts.schedule) == (2.0, 9, False, "cosine")
    assert opts.linear_config().bias is False and opts.backbone == "resnet20"


def test_key_value_after_an_option_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pretrain", "--show-config", "method.name=kcl", "--quiet", "model.backbone=resnet8"]
    assert main(argv) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["method"]["name"], shown["model"]["backbone"]) == ("kcl", "resnet8")
    # --resume with no PATH, then overrides
    assert main(["pretrain", "--show-config", "--resume", "method.name=kcl", "optim.epochs=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["epochs"] == 3
    # probe and study: a late key is read (here a misspelt one, refused with its hint)
    argv = ["probe", "--quiet", "probe.lr=1", "--epochs", "3", "probe.lrr=2"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 2
    assert "did you mean 'probe.lr'" in capsys.readouterr().err
    argv = ["study", str(STUDY), "--out", str(tmp_path / "s"), "--quiet", "seedz=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'seedz'" in err and "unrecognized" not in err
    assert not (tmp_path / "s").exists()


def test_key_value_on_a_command_without_overrides_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "e.pth"), "a.b=1"]) == 2
    assert "takes no KEY=VALUE overrides" in capsys.readouterr().err
