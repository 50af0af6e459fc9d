"""``run.precision=bf16`` and ``run.compile=true`` on CPU: the same code paths a GPU uses, with
losses equal to the eager float32 step within stated tolerances."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balfeat.engine.config import config_from_dict, config_to_dict, load_config
from balfeat.engine.trainer import Trainer

TINY = [
    "data.dataset=synthetic",
    "data.synthetic_size=64",
    "data.num_classes=4",
    "data.image_size=12",
    "model.backbone=resnet8",
    "method.name=kcl",
    "method.K=32",
    "method.dim=8",
    "method.bn_splits=2",
    "optim.batch_size=16",
    "optim.epochs=1",
    "run.max_steps=2",
    "run.device=cpu",
    "run.progress=false",
    "run.log_every=1",
]


def _losses(out: Path, extra: list[str]) -> list[float]:
    t = Trainer(load_config(None, [*TINY, f"run.output_dir={out}", *extra]))
    t.fit()
    return [r["loss"] for r in t.history if "loss" in r]


def test_bf16_autocast_on_cpu_gives_the_float32_loss(tmp_path: Path) -> None:
    fp32 = _losses(tmp_path / "fp32", [])
    bf16 = _losses(tmp_path / "bf16", ["run.precision=bf16"])
    assert len(fp32) == len(bf16) == 2
    # bfloat16 keeps 8 bits of mantissa: the first loss (same weights) agrees to ~1%.
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)
    assert bf16 != fp32  # the bf16 path really ran


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BALFEAT_SKIP_COMPILE") == "1", reason="compile disabled")
def test_compiled_step_on_cpu_gives_the_eager_loss(tmp_path: Path) -> None:
    eager = _losses(tmp_path / "eager", [])
    compiled = _losses(tmp_path / "compiled", ["run.compile=true"])
    # Inductor reorders float32 reductions: equal to rounding.
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)


def test_old_amp_key_is_read_as_precision() -> None:
    d = config_to_dict(load_config(None, []))
    d["run"].pop("precision")
    d["run"]["amp"] = "none"
    assert config_from_dict(d).run.precision == "fp32"
    d["run"]["amp"] = "bf16"
    assert config_from_dict(d).run.precision == "bf16"
