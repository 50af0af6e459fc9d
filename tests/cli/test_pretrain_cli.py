"""``balfeat pretrain``: end to end on tiny synthetic data, resume, errors, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from balfeat.cli.main import main
from balfeat.engine.checkpoint import load_checkpoint

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=64",
    "data.num_classes=4",
    "data.image_size=16",
    "data.augmentation=none",
    "model.backbone=resnet20",
    "method.name=sl",
    "optim.batch_size=16",
    "optim.epochs=2",
    "optim.base_lr=0.5",
    "run.device=cpu",
    "run.log_every=1",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a contended machine: threads only cost
    yield
    torch.set_num_threads(before)


def test_pretrain_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  keep_last: 1\n")
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(cfg), "--quiet", *TINY, f"run.output_dir={out}"]
    assert main([*args, "run.max_steps=4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["epochs"] == 1
    assert main([*args[:4], "--resume", *args[4:]]) == 0  # --resume before the overrides
    state = load_checkpoint(out / "last.pth")
    assert (state["epoch"], state["step"], state["method"]) == (2, 8, "sl")
    assert state["config"]["run"]["keep_last"] == 1
    assert [p.name for p in out.glob("checkpoint_*.pth")] == ["checkpoint_0002.pth"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8


def test_pretrain_config_typo_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "optim.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.base_lr" in err and "Traceback" not in err


def test_pretrain_resume_from_corrupt_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code = main(["pretrain", "--quiet", *TINY, f"run.output_dir={tmp_path}", "--resume", str(bad)])
    assert code == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.distributed
def test_pretrain_under_torchrun_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), "-m", "balfeat", "pretrain", "--quiet", *TINY,
        "optim.epochs=1", f"run.output_dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(out / "last.pth")
    assert state["world_size"] == 2 and state["step"] == 4 and len(state["rng"]) == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_pretrain_checks_paths_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    base = ["pretrain", "data.dataset=synthetic", "optim.epochs=1", "run.progress=false"]
    assert main([*base, f"run.output_dir={blocker}/run"]) == 2
    assert "run.output_dir" in capsys.readouterr().err
    assert main([*base, f"data.train_split={tmp_path / 'missing.txt'}"]) == 2
    assert "data.train_split" in capsys.readouterr().err


def test_show_config_lists_the_methods_own_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    assert main(["pretrain", "--show-config", "method.name=kcl", "method.posk=2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method"]["name"] == "kcl" and shown["method"]["posk"] == 2
    assert "alpha" not in shown["method"]  # PaCo's key is not KCL's
    assert not (tmp_path / "runs").exists()
    assert main(["pretrain", "--show-config", "method.name=sl", "method.posk=2"]) == 2
    assert "'sl' has no parameter 'posk'" in capsys.readouterr().err
