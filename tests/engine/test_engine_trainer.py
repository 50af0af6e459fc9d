"""Trainer in one process: training, metrics, checkpoints, exact resume, NaN loss, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from engine_standins import TinyImages, TinyMoCo, TinySL, params_of, tiny_overrides

from balfeat.engine.checkpoint import load_checkpoint, numbered_checkpoints
from balfeat.engine.config import load_config
from balfeat.engine.trainer import Trainer
from balfeat.errors import CheckpointError, TrainingError


def _run(
    out: Path,
    moco: bool = False,
    extra: tuple[str, ...] = (),
    resume: bool | str | None = None,
    epochs: int = 2,
) -> Trainer:
    cfg = load_config(None, [*tiny_overrides(str(out), epochs=epochs), *extra])
    torch.manual_seed(123)  # the stand-ins are built before the trainer seeds anything
    method = TinyMoCo() if moco else TinySL()
    dataset = TinyImages(views=2 if moco else 1)
    trainer = Trainer(cfg, method=method, train_dataset=dataset, resume=resume)
    trainer.fit()
    return trainer


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sl_trains_logs_and_checkpoints(tmp_path: Path) -> None:
    trainer = _run(tmp_path, extra=("run.keep_last=2",), epochs=3)
    losses = [r["loss"] for r in trainer.history]
    assert len(losses) == 12  # 64 images / batch 16 = 4 steps x 3 epochs
    assert sum(losses[-4:]) < sum(losses[:4])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 12
    assert {"loss", "lr", "images_per_s", "epoch"} <= json.loads(lines[0]).keys()
    assert (tmp_path / "config.yaml").is_file()
    assert [p.name for p in numbered_checkpoints(tmp_path)] == [
        "checkpoint_0002.pth",
        "checkpoint_0003.pth",
    ]
    state = load_checkpoint(tmp_path / "last.pth")
    assert state["epoch"] == 3 and state["step"] == 12 and state["method"] == "moco_v2"
    assert state["config"]["optim"]["epochs"] == 3
    _assert_same(state["model"], params_of(trainer.method))


def test_lr_schedule_is_per_epoch_cosine(tmp_path: Path) -> None:
    trainer = _run(tmp_path, epochs=2)
    lrs = [r["lr"] for r in trainer.history]
    assert lrs[:4] == [pytest.approx(0.8 * 16 / 256)] * 4
    assert lrs[4:] == [pytest.approx(0.8 * 16 / 256 * 0.5)] * 4


@pytest.mark.parametrize("moco", [False, True], ids=["sl", "moco"])
def test_resume_after_epoch_is_exact(tmp_path: Path, moco: bool) -> None:
    full = _run(tmp_path / "full", moco=moco)
    _run(tmp_path / "cut", moco=moco, extra=("run.max_steps=4",))  # stops after epoch 1 of 2
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["epoch"] == 1
    resumed = _run(tmp_path / "cut", moco=moco, resume=True)
    assert resumed.step == 8
    _assert_same(params_of(full.method), params_of(resumed.method))
    if moco:  # the queue and its pointer are part of the state
        assert int(resumed.method.queue_ptr) == (8 * 16) % 32


def test_resume_mid_epoch_is_exact(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", moco=True)
    _run(tmp_path / "cut", moco=True, extra=("run.max_steps=6",))  # epoch 2, batch 2 of 4
    state = load_checkpoint(tmp_path / "cut" / "last.pth")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 2, 6)
    resumed = _run(tmp_path / "cut", moco=True, resume=str(tmp_path / "cut" / "last.pth"))
    _assert_same(params_of(full.method), params_of(resumed.method))


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    trainer = _run(tmp_path, resume=True, epochs=1)
    assert trainer.step == 4


def test_resume_other_architecture_is_rejected(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match=r"method 'moco_v2'.*'kcl'"):
        _run(tmp_path, extra=("method.name=kcl",), resume=True)
    with pytest.raises(CheckpointError, match="does not fit"):
        _run(tmp_path, moco=True, resume=True)


def test_non_finite_loss_names_step_and_keeps_checkpoint(tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(str(tmp_path), epochs=3))
    method = TinySL()
    method.nan_at_call = 6  # epoch 2, batch 2
    trainer = Trainer(cfg, method=method, train_dataset=TinyImages())
    with pytest.raises(TrainingError, match=r"non-finite loss.*step 6"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "last.pth")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_batch_not_divisible_by_world_and_too_few_images(tmp_path: Path) -> None:
    cfg = load_config(None, [*tiny_overrides(str(tmp_path)), "optim.batch_size=128"])
    with pytest.raises(TrainingError, match="fewer than one batch"):
        Trainer(cfg, method=TinySL(), train_dataset=TinyImages()).fit()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from engine_standins import TinyImages, TinyMoCo, tiny_overrides
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer
    cfg = load_config(None, [*tiny_overrides({out!r}, epochs=3), *sys.argv[1:]])
    torch.manual_seed(123)
    Trainer(cfg, method=TinyMoCo(), train_dataset=TinyImages(views=2), resume=True).fit()
    torch.save(Trainer.__name__, {out!r} + "/done")
    """
)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", moco=True, epochs=3)
    script = tmp_path / "train.py"
    out = tmp_path / "killed"
    script.write_text(_KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BALFEAT_TEST_FAULT": "kill:7"}
    # SIGKILL in epoch 2 at step 7, after checkpoint_0001 was written: no cleanup code runs.
    proc = subprocess.run([sys.executable, str(script)], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "last.pth")["step"] == 4
    assert not (out / "done").exists()
    env.pop("BALFEAT_TEST_FAULT")
    proc = subprocess.run([sys.executable, str(script)], env=env, timeout=120)
    assert proc.returncode == 0
    state = load_checkpoint(out / "last.pth")
    assert state["step"] == 12
    _assert_same(params_of(full.method), state["model"])


def test_amp_on_cpu_warns_and_trains_in_float32(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"run\.precision=fp16 needs a GPU"):
        trainer = _run(tmp_path, extra=("run.precision=fp16",), epochs=1)
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
    assert trainer.step == 4
