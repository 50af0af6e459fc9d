"""2 CPU processes (gloo): shuffle-BN round trip and MoCo/KCL queues gathered across ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from balfeat.methods import KCL
        from balfeat.models.backbones import build_backbone
        from balfeat.models.batchnorm import batch_shuffle_ddp, batch_unshuffle_ddp

        x = torch.arange(6.0).view(3, 2) + 100 * rank
        gen = torch.Generator().manual_seed(rank)  # only rank 0's permutation is used
        y, idx = batch_shuffle_ddp(x, gen)
        back = batch_unshuffle_ddp(y * 2, idx)
        torch.manual_seed(0)
        method = KCL(build_backbone("resnet20", in_channels=1), dim=4, K=10, bn_splits=2)
        images = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]
        labels = torch.arange(4) + 10 * rank
        out = method(images, labels)
        out["loss"].backward()
        method.after_step()
        torch.save(
            {
                "x": x,
                "y": y,
                "back": back,
                "queue_labels": method.queue.labels.clone(),
                "queue_keys": method.queue.keys.clone(),
                "ptr": int(method.queue.ptr),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_two_ranks_shuffle_bn_and_gathered_queue(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    # shuffle: the two slices together are a permutation of the global batch
    global_x = torch.cat([r[0]["x"], r[1]["x"]])
    shuffled = torch.cat([r[0]["y"], r[1]["y"]])
    assert sorted(shuffled[:, 0].tolist()) == sorted(global_x[:, 0].tolist())
    for i in range(2):  # unshuffle returns each rank's own rows in order
        torch.testing.assert_close(r[i]["back"], r[i]["x"] * 2)
    # queues: identical on both ranks, rank 0's keys then rank 1's, 8 of 10 slots written
    assert torch.equal(r[0]["queue_keys"], r[1]["queue_keys"])
    assert r[0]["queue_labels"].tolist() == [0, 1, 2, 3, 10, 11, 12, 13, -1, -1]
    assert r[0]["ptr"] == r[1]["ptr"] == 8
