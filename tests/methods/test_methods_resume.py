"""Every registered method resumes exactly through the Trainer: stopped at an epoch's end or in the
middle of one and resumed, it ends where one uninterrupted run ends (parameters, queues, class
centres, targets, BN statistics, step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from method_standins import tiny_method_config

from balfeat.methods import method_names

pytestmark = pytest.mark.slow


def _trainer(name: str, out: Path, extra: tuple[str, ...] = (), resume: bool = False) -> Any:
    from balfeat.engine.trainer import Trainer

    tiny = ("data.synthetic_size=48", "method.target_warmup_steps=2", "method.rematch_every=2")
    trainer = Trainer(
        tiny_method_config(name, out, (*tiny, "optim.epochs=2", *extra)), resume=resume
    )
    trainer.fit()
    return trainer


@pytest.mark.parametrize("where", ["epoch_end", "mid_epoch"])
@pytest.mark.parametrize("name", method_names())
def test_stop_and_resume_equals_one_run(name: str, where: str, tmp_path: Path) -> None:
    full = _trainer(name, tmp_path / "full")
    per_epoch = full.steps_per_epoch
    stop = per_epoch + (1 if where == "mid_epoch" else 0)
    cut = _trainer(name, tmp_path / "cut", (f"run.max_steps={stop}",))
    half = {k: v.clone() for k, v in cut.method.state_dict().items()}
    assert any(not torch.equal(half[k], v) for k, v in full.method.state_dict().items())
    resumed = _trainer(name, tmp_path / "cut", resume=True)
    assert resumed.step == full.step == 2 * per_epoch
    a, b = full.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
