"""benchmarks/bench_under_load.py: its workload is a valid config (the demo's MoCo v2 cell on
synthetic Fashion-MNIST-shaped images) and its policies are the ones its README section names."""

from __future__ import annotations

from pathlib import Path

from balfeat.engine.config import load_config
from benchmark_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


bench = load_benchmark("bench_under_load")


def test_the_workload_is_the_demos_moco_cell(tmp_path: Path) -> None:
    cfg = load_config(overrides=bench.worker_overrides(13, 128, str(tmp_path)))
    assert cfg.method.name == "moco_v2" and cfg.model.backbone == "resnet8"
    assert (cfg.data.image_size, cfg.data.channels, cfg.optim.batch_size) == (28, 1, 128)
    assert cfg.run.max_steps == 13 and cfg.data.synthetic_size == 13 * 128


def test_the_policies() -> None:
    assert bench.POLICIES == {
        "old": (None, -1),
        "passive": ("PASSIVE", -1),
        "one": ("PASSIVE", 1),
        "auto": ("PASSIVE", 0),
        "spin_auto": (None, 0),
    }
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in bench.POLICIES)
