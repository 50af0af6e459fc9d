"""``torchrun --nproc_per_node 2`` against one process on a real ResNet with BatchNorm and
augmentation (resnet8, the supervised recipe on the on-device path, CPU, gloo).

With ``run.sync_bn=true`` the two processes end where one process ends: the ranks hold slices of
one process's global batches, augmented with its draws, and BatchNorm normalises over the global
batch. Without it BatchNorm statistics are per rank (the reference's choice) and the weights
drift apart: ``benchmarks/bench_world_size.py`` measures how far, for MoCo v2 and KCL too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_two_processes_equal_one_with_sync_bn_and_not_without(tmp_path: Path) -> None:
    bench = load_benchmark("bench_world_size")
    args = bench.overrides("sl", steps=6)  # 4 steps per epoch: crosses an epoch boundary
    one = bench.pretrain(tmp_path / "one", args, 1)
    synced = bench.pretrain(tmp_path / "sync", [*args, "run.sync_bn=true"], 2)
    per_rank = bench.pretrain(tmp_path / "per_rank", [*args, "run.sync_bn=false"], 2)
    assert one["step"] == synced["step"] == per_rank["step"] == 6
    assert synced["world_size"] == per_rank["world_size"] == 2
    same = bench.differences(one["model"], synced["model"])
    # measured: 1.2e-7 (parameters) and 3.6e-7 (running statistics) after 9 steps
    assert same["params"] < 2e-6 and same["bn_stats"] < 5e-6, same
    apart = bench.differences(one["model"], per_rank["model"])
    # measured: 1.7e-2 (parameters), 0.14 (running statistics) after 9 steps
    assert 1e-4 < apart["params"] < 0.2 and apart["bn_stats"] > 1e-3, apart
