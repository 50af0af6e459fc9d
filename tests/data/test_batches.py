"""BatchSource: one object for the three input paths, with the resume skipping of each: a source
restored from a mid-epoch state gives exactly the batches the uninterrupted epoch gave."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from balfeat.data.batches import BatchSource
from balfeat.data.datasets import ArrayDataset
from balfeat.data.device_data import DeviceAugment
from balfeat.data.samplers import ClassBalancedSampler, ShardedSampler, SkipSampler
from balfeat.data.transforms import TwoViews, build_transform

CPU = torch.device("cpu")


def _dataset(transform: Any = None) -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    return ArrayDataset(images, np.arange(40) % 4, transform=transform, num_classes=4)


def _source(path: str) -> BatchSource:
    if path == "pil":  # a DataLoader over PIL recipes (random draws from the global RNG)
        ds = _dataset(TwoViews(build_transform("moco_v2", 12, 3)))
        return BatchSource(ds, ShardedSampler(40, seed=3), batch_size=8, device=CPU, seed=5)
    ds = _dataset()
    augment = DeviceAugment.from_recipe("moco_v2", 12, 3)
    return BatchSource(
        ds, ClassBalancedSampler(ds.targets, num_samples=40, seed=3), batch_size=8, device=CPU,
        seed=5, device_augment=[augment] * 3, views=3,
    )  # fmt: skip


def _epoch(source: BatchSource, epoch: int, stop: int | None = None) -> list[Any]:
    source.set_epoch(epoch)
    out = []
    for images, labels in source:
        out.append((images, labels))
        if stop is not None and source.position == stop:
            break
    return out


@pytest.mark.parametrize("path", ["pil", "device"])
def test_a_resumed_epoch_gives_the_uninterrupted_batches(path: str) -> None:
    torch.manual_seed(0)
    full = _source(path)
    _epoch(full, 0)
    whole = _epoch(full, 1)
    assert len(whole) == len(full) == 5 and full.position == 0
    torch.manual_seed(0)
    cut = _source(path)
    _epoch(cut, 0)
    first = _epoch(cut, 1, stop=2)
    state = cut.state_dict()
    rng = torch.get_rng_state()
    assert state["batch_in_epoch"] == 2
    again = _source(path)
    again.load_state_dict(state)
    torch.set_rng_state(rng)
    rest = _epoch(again, 1)
    for (xa, ya), (xb, yb) in zip(whole, first + rest, strict=True):
        assert torch.equal(ya, yb)
        for va, vb in zip(xa, xb, strict=True):
            assert torch.equal(va, vb)
    views = whole[0][0]
    assert len(views) == (3 if path == "device" else 2)


def test_the_device_path_makes_one_view_per_augmentation() -> None:
    source = _source("device")
    (views, labels), *_ = _epoch(source, 0)
    assert source.on_device and len(views) == 3 and views[0].shape == (8, 3, 12, 12)
    assert not torch.equal(views[0], views[1])  # independent draws
    assert labels.dtype == torch.int64 and labels.shape == (8,)


def test_skip_sampler_leaves_out_the_first_indices() -> None:
    base = ShardedSampler(10, seed=1)
    skipped = SkipSampler(base, 4)
    assert list(skipped) == list(base)[4:] and len(skipped) == 6


@pytest.mark.parametrize("balanced", [False, True])
def test_ranks_on_the_device_path_see_one_process_batches_and_draws(balanced: bool) -> None:
    """2 ranks x 4 images: each rank's batch is its slice of one process's batch of 8, images
    and both views' augmentation alike (the global batch's draws, each rank its rows)."""
    ds = _dataset()
    augment = DeviceAugment.from_recipe("moco_v2", 12, 3)

    def source(world: int, rank: int) -> BatchSource:
        batch = 8 // world
        sampler: Any = (
            ClassBalancedSampler(ds.targets, seed=3, num_replicas=world, rank=rank, block=batch)
            if balanced
            else ShardedSampler(40, seed=3, num_replicas=world, rank=rank, block=batch)
        )
        return BatchSource(ds, sampler, batch_size=batch, device=CPU, seed=5, rank=rank,
                           world=world, device_augment=augment, views=2)  # fmt: skip

    one = _epoch(source(1, 0), 1)
    ranks = [_epoch(source(2, r), 1) for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 5
    for b, (views, labels) in enumerate(one):
        assert torch.equal(labels, torch.cat([ranks[0][b][1], ranks[1][b][1]]))
        for v in range(2):
            halves = torch.cat([ranks[0][b][0][v], ranks[1][b][0][v]])
            assert torch.equal(views[v], halves), (b, v)


def test_a_rank_outside_the_world_is_refused() -> None:
    from balfeat.errors import DataError

    with pytest.raises(DataError, match="rank 2"):
        BatchSource(_dataset(), ShardedSampler(40), batch_size=4, device=CPU, seed=0, rank=2,
                    world=2)  # fmt: skip
