"""Every registered method resumes exactly through the Trainer: stopped at an epoch's end or in the
middle of one and resumed, it ends where one uninterrupted run ends (parameters, queues, class
centres, targets, BN statistics, step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from balfeat.methods import method_names

pytestmark = pytest.mark.slow


def _trainer(name: str, out: Path, extra: tuple[str, ...] = (), resume: bool = False):  # type: ignore[no-untyped-def]
    from balfeat.engine.config import load_config, overrides_for
    from balfeat.engine.trainer import Trainer

    cfg = load_config(
        None,
        overrides_for(
            name,
            [
                f"method.name={name}",
                "data.dataset=synthetic",
                "data.synthetic_size=48",
                "data.num_classes=4",
                "data.imbalance_ratio=4",
                "data.image_size=16",
                "data.num_workers=0",
                "model.backbone=resnet8",
                "method.K=16",
                "method.dim=8",
                "method.bn_splits=2",
                "method.target_steps=20",
                "method.target_warmup_steps=2",
                "method.rematch_every=2",
                "optim.batch_size=8",
                "optim.epochs=2",
                "run.progress=false",
                "run.device=cpu",
                f"run.output_dir={out}",
                *extra,
            ],
        ),
    )
    trainer = Trainer(cfg, resume=resume)
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
