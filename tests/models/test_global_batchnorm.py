"""GlobalBatchNorm (``run.sync_bn``): 2 gloo ranks with half batches normalise, back-propagate
and update running statistics as one BatchNorm over the whole batch; one process is plain BN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from balfeat.models.batchnorm import GlobalBatchNorm, convert_global_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))  # fmt: skip
    with torch.no_grad():  # non-trivial affine parameters and a shifted running mean
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
    return net


def _batch() -> torch.Tensor:
    return torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.0 + 3.0


def _step(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward/backward of a loss summed over rows; outputs, gradients and state. (Not the
    sum of squares of a BN output: that is constant in its input, so its gradient is noise.)"""
    out = net(x)
    weights = torch.linspace(-1.0, 1.0, out.shape[1])
    (out.tanh() * weights).sum().backward()
    grads = {f"grad.{k}": p.grad.clone() for k, p in net.named_parameters()}
    return {"out": out.detach(), **grads, **{k: v.clone() for k, v in net.state_dict().items()}}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net = _net()
        params = dict(net.named_parameters())
        net = convert_global_batchnorm(net)
        assert isinstance(net[1], GlobalBatchNorm) and isinstance(net[5], GlobalBatchNorm)
        assert net[1].weight is params["1.weight"]  # the same Parameter: optimizers still hold it
        net.train()
        x = _batch().chunk(world)[rank]
        # DDP averages gradients over ranks: sum over ranks of rank-local gradients / world
        res = _step(net, x)
        for k, v in res.items():
            if k.startswith("grad."):
                dist.all_reduce(v)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_equal_one_batchnorm_over_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one = _step(_net().train(), _batch())
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), one["out"])
    for k, v in one.items():
        if k == "out":
            continue
        for r in ranks:  # gradients summed over ranks, statistics identical on every rank
            torch.testing.assert_close(r[k], v, rtol=1e-5, atol=1e-5, msg=k)
    assert int(ranks[0]["1.num_batches_tracked"]) == 1


def test_one_process_and_eval_are_plain_batchnorm() -> None:
    net, plain = convert_global_batchnorm(_net()), _net()
    x = _batch()
    torch.testing.assert_close(_step(net.train(), x), _step(plain.train(), x))
    torch.testing.assert_close(net.eval()(x), plain.eval()(x))
    assert set(net.state_dict()) == set(plain.state_dict())
