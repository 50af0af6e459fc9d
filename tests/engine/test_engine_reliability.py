"""Nothing lost, nothing silently wrong: run folders, locks, resume policy, Ctrl-C, disk full."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_standins import TinyImages, TinySL, tiny_overrides

from balfeat.engine import trainer as trainer_mod
from balfeat.engine.checkpoint import load_checkpoint
from balfeat.engine.config import load_config
from balfeat.engine.run_dir import LOCK_NAME
from balfeat.engine.trainer import Trainer
from balfeat.errors import CheckpointError, ConfigError, DataError, TrainingError


def _trainer(
    out: Path,
    extra: tuple[str, ...] = (),
    resume: bool | str | None = None,
    epochs: int = 2,
    dataset: object | None = None,
) -> Trainer:
    cfg = load_config(None, [*tiny_overrides(str(out), epochs=epochs), *extra])
    torch.manual_seed(123)
    ds = TinyImages(views=1) if dataset is None else dataset
    return Trainer(cfg, method=TinySL(), train_dataset=ds, resume=resume)  # type: ignore[arg-type]


def test_a_folder_holding_a_run_is_refused_without_resume(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(TrainingError, match=r"already holds a run .*--resume.*run\.overwrite=true"):
        _trainer(tmp_path).fit()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    # run.overwrite=true replaces it: no checkpoint of the old run is left to be mixed in.
    _trainer(tmp_path, ("run.overwrite=true",), epochs=1).fit()
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pth")) == ["checkpoint_0001.pth"]
    assert load_checkpoint(tmp_path / "last.pth")["epoch"] == 1


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path: Path) -> None:
    import socket

    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LOCK_NAME).write_text(f"1 {socket.gethostname()}\n")  # pid 1 is always alive
    with pytest.raises(TrainingError, match=r"another balfeat process \(pid 1"):
        _trainer(tmp_path).fit()
    assert not (tmp_path / "config.yaml").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid} {socket.gethostname()}\n")
    _trainer(tmp_path, epochs=1).fit()  # takes the stale lock over, then releases it
    assert not (tmp_path / LOCK_NAME).exists()
    assert (tmp_path / "last.pth").is_file()


def test_resume_refuses_a_changed_schedule_and_lists_what_differs(tmp_path: Path) -> None:
    _trainer(tmp_path, epochs=2).fit()
    with pytest.raises(ConfigError, match=r"optim\.epochs: 2 -> 4") as info:
        _trainer(tmp_path, ("run.seed=5",), resume=True, epochs=4).fit()
    assert "run.seed: 0 -> 5" in str(info.value)
    # Operational keys may change.
    t = _trainer(tmp_path, ("run.log_every=1",), resume=True, epochs=2)
    summary = t.fit()
    assert summary["already_finished"]


def test_resuming_a_finished_run_says_so(tmp_path: Path) -> None:
    _trainer(tmp_path, epochs=1).fit()
    summary = _trainer(tmp_path, resume=True, epochs=1).fit()
    assert summary["already_finished"] is True
    assert (
        isinstance(summary["final_loss"], float) and summary["final_loss"] == summary["final_loss"]
    )
    assert summary["images_per_s"] is None and "already finished" in summary["message"]


def test_resume_from_a_run_folder_and_metrics_do_not_repeat_steps(tmp_path: Path) -> None:
    # 4 steps per epoch; stop after 6 steps (mid-epoch 2), then resume from the folder.
    _trainer(tmp_path, ("run.max_steps=6", "run.log_every=1"), epochs=2).fit()
    with (tmp_path / "metrics.jsonl").open("a") as fh:  # a line logged after the checkpoint
        fh.write(json.dumps({"epoch": 2, "step": 7, "loss": 1.0}) + "\n")
    t = _trainer(tmp_path, ("run.log_every=1",), resume=str(tmp_path), epochs=2)
    t.fit()
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        _trainer(tmp_path / "empty", resume=str(tmp_path.parent)).fit()


def test_an_empty_training_set_is_an_error_never_the_whole_pool(tmp_path: Path) -> None:
    empty = TinyImages(views=1)
    empty.images = empty.images[:0]
    empty.targets = empty.targets[:0]
    with pytest.raises(DataError, match="training set is empty"):
        _trainer(tmp_path, dataset=empty).fit()
    assert not (tmp_path / "config.yaml").exists()


def test_ctrl_c_saves_the_current_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _trainer(tmp_path, epochs=2)
    real = TinySL.after_step

    def interrupt(self: TinySL) -> None:
        real(self)
        if t.step == 5:  # Ctrl-C during step 6: the step finishes, is saved, then it stops
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TinySL, "after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    state = load_checkpoint(tmp_path / "last.pth")
    assert state["step"] == 6 and state["batch_in_epoch"] == 2 and state["epoch"] == 1
    assert not (tmp_path / LOCK_NAME).exists()


def test_disk_full_names_the_folder_and_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trainer(tmp_path, ("run.max_steps=4",), epochs=2).fit()
    good = (tmp_path / "last.pth").read_bytes()

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trainer_mod, "save_checkpoint", full)
    with pytest.raises(TrainingError, match=r"disk full at .*previous checkpoint is intact"):
        _trainer(tmp_path, resume=True, epochs=2).fit()
    assert (tmp_path / "last.pth").read_bytes() == good


def test_tensorboard_on_without_the_package_is_an_error(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"run\.tensorboard=on"):
            _trainer(tmp_path, ("run.tensorboard=on",)).fit()
    else:  # pragma: no cover - with the package installed
        _trainer(tmp_path, ("run.tensorboard=on",), epochs=1).fit()
        assert (tmp_path / "tensorboard").is_dir()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.log_every=0", r"run\.log_every must be >= 1"),
        ("run.max_steps=-1", r"run\.max_steps must be >= 0"),
        ("optim.warmup_epochs=-2", r"optim\.warmup_epochs must be >= 0"),
        ("optim.milestones=[80,60]", r"strictly increasing"),
        ("run.save_every_steps=-1", r"run\.save_every_steps must be >= 0"),
        ("optim.momentum=-0.5", r"optim\.momentum must be >= 0"),
        ("optim.weight_decay=-1", r"optim\.weight_decay must be >= 0"),
        ("data.num_workers=-1", r"data\.num_workers must be >= 0"),
        ("data.num_classes=0", r"data\.num_classes must be >= 1"),
        ("data.max_samples=-3", r"data\.max_samples must be >= 0"),
        ("data.image_size=0", r"data\.image_size must be >= 1"),
        ("method.T=0", r"method\.T must be > 0"),
        ("method.m=1.5", r"method\.m must be >= 0 and <= 1"),
        ("optim.base_lr=nan", r"must be a finite number"),
    ],
)
def test_out_of_range_config_values_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_step_milestones_past_the_last_epoch_are_warned(tmp_path: Path) -> None:
    """A recipe whose epochs were shrunk keeps milestones the run never reaches: said, not fatal."""
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer

    over = [
        "data.dataset=synthetic", "data.synthetic_size=32", "data.num_classes=4",
        "data.image_size=16", "data.num_workers=0", "model.backbone=resnet8", "method.name=sl",
        "optim.batch_size=8", "optim.epochs=2", "optim.schedule=step", "optim.milestones=[1,5]",
        "run.max_steps=1", "run.progress=false", "run.device=cpu", f"run.output_dir={tmp_path}",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match=r"optim.milestones \[5\] are not below optim.epochs=2"):
        Trainer(load_config(None, over)).fit()
