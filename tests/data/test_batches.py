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
