from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from balfeat.data.samplers import ClassBalancedSampler, ShardedSampler, shard_positions
from balfeat.errors import DataError

# 99th percentile of chi-square with 9 degrees of freedom.
CHI2_9DF_P99 = 21.666


def _imbalanced_labels() -> np.ndarray:
    counts = [1000, 300, 100, 50, 20, 10, 5, 3, 2, 1]
    return np.repeat(np.arange(10), counts)


def test_class_frequencies_are_uniform() -> None:
    labels = _imbalanced_labels()
    sampler = ClassBalancedSampler(labels, num_samples=20_000, seed=3)
    drawn = labels[np.fromiter(sampler, dtype=np.int64)]
    observed = np.bincount(drawn, minlength=10)
    expected = len(drawn) / 10
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_9DF_P99, observed
    # plain uniform sampling over images is very far from uniform over classes
    plain = np.bincount(labels, minlength=10) * (len(drawn) / len(labels))
    assert float(((plain - expected) ** 2 / expected).sum()) > 100 * CHI2_9DF_P99


def test_repeat_groups_share_a_class_and_cycle_images() -> None:
    labels = _imbalanced_labels()
    s = ClassBalancedSampler(labels, repeat=4, num_samples=400, seed=1)
    order = np.fromiter(s, dtype=np.int64)
    assert len(order) == 400
    groups = labels[order].reshape(-1, 4)
    assert (groups == groups[:, :1]).all()
    # the class with 2 images: each pick of 4 uses both images twice
    two = np.flatnonzero(labels == 8)
    for g in order.reshape(-1, 4):
        if labels[g[0]] == 8:
            assert sorted(np.unique(g).tolist()) == sorted(two.tolist())


def test_deterministic_per_epoch_and_different_across_epochs() -> None:
    labels = _imbalanced_labels()
    a = ClassBalancedSampler(labels, seed=5)
    b = ClassBalancedSampler(labels, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.load_state_dict(a.state_dict())
    assert list(b) == list(a)
    assert list(ClassBalancedSampler(labels, seed=6)) != first


@pytest.mark.parametrize("repeat", [1, 3])
def test_balanced_shards_disjoint_equal(repeat: int) -> None:
    labels = _imbalanced_labels()
    shards = [
        ClassBalancedSampler(labels, repeat=repeat, num_samples=101, seed=2, num_replicas=3, rank=r)
        for r in range(3)
    ]
    for s in shards:
        s.set_epoch(4)
    lens = {len(list(s)) for s in shards}
    assert lens == {len(shards[0])} and len(shards[0]) % repeat == 0 and 3 * len(shards[0]) >= 101
    glob = shards[0].global_order()
    joined = np.concatenate([np.fromiter(s, dtype=np.int64) for s in shards])
    assert (joined == glob).all()  # disjoint positions of one global sequence


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharded_sampler(drop_last: bool) -> None:
    n, world = 10, 3
    shards = [
        ShardedSampler(n, seed=1, num_replicas=world, rank=r, drop_last=drop_last)
        for r in range(world)
    ]
    got = [list(s) for s in shards]
    size = 3 if drop_last else 4
    assert all(len(g) == size == len(s) for g, s in zip(got, shards, strict=True))
    flat = [i for g in got for i in g]
    if drop_last:
        assert len(set(flat)) == 9
    else:
        assert set(flat) == set(range(n)) and len(flat) == 12
    again = ShardedSampler(n, seed=1, num_replicas=world, rank=0, drop_last=drop_last)
    assert list(again) == got[0]
    again.set_epoch(1)
    assert list(again) != got[0]


def test_sharded_single_process_and_no_shuffle() -> None:
    s = ShardedSampler(5, shuffle=False)
    assert list(s) == [0, 1, 2, 3, 4]
    assert sorted(ShardedSampler(7)) == list(range(7))


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="rank 3"):
        ShardedSampler(5, num_replicas=2, rank=3)
    with pytest.raises(DataError, match="repeat"):
        ClassBalancedSampler([0, 1], repeat=0)


def test_defaults_in_one_process_feed_a_dataloader() -> None:
    import torch
    from torch.utils.data import DataLoader

    from balfeat.data.datasets import ArrayDataset

    labels = np.array([0] * 30 + [1] * 2)
    ds = ArrayDataset(np.zeros((32, 2, 2), np.uint8), labels)
    sampler = ClassBalancedSampler(ds.targets, repeat=2, seed=0)
    assert (sampler.num_replicas, sampler.rank) == (1, 0) and len(sampler) == 32
    batches = list(DataLoader(ds, batch_size=8, sampler=sampler))
    got = torch.cat([b[1] for b in batches])
    assert len(got) == 32 and 8 <= int(got.sum()) <= 24  # class 1 (2 of 32 images) ~ half


def test_balanced_sampler_visits_every_class_once_per_cycle_as_the_reference() -> None:
    """BalFeat's RandomCycleIter over classes: each window of C picks holds every class once."""
    from balfeat.data.samplers import ClassBalancedSampler

    labels = np.array([0] * 50 + [1] * 5 + [2] * 2 + [3] * 1)
    s = ClassBalancedSampler(labels, repeat=2, num_samples=80, seed=3, num_replicas=1, rank=0)
    order = s.global_order()
    picks = labels[order].reshape(-1, 2)
    assert (picks[:, 0] == picks[:, 1]).all()  # repeat images of one class per pick
    cls = picks[:, 0]
    for start in range(0, len(cls) - len(cls) % 4, 4):
        assert sorted(cls[start : start + 4].tolist()) == [0, 1, 2, 3]
    s.set_epoch(1)
    assert not np.array_equal(s.global_order(), order)  # reshuffled per epoch


@pytest.mark.parametrize("balanced", [False, True])
def test_ranks_with_block_hold_slices_of_one_process_global_batches(balanced: bool) -> None:
    """With block = the per-rank batch, rank r's batch b is slice r of one process's batch b
    (4 ranks x 3 images = one process's 12), so gathering in rank order gives its order."""
    labels = np.arange(48) % 5

    def sampler(world: int, rank: int, block: int) -> Any:
        if balanced:
            return ClassBalancedSampler(labels, repeat=3, seed=4, num_replicas=world, rank=rank,
                                        block=block)  # fmt: skip
        return ShardedSampler(48, seed=4, num_replicas=world, rank=rank, block=block)

    one = sampler(1, 0, 12)
    one.set_epoch(2)
    order = np.fromiter(one, dtype=np.int64)
    shards = []
    for r in range(4):
        s = sampler(4, r, 3)
        s.set_epoch(2)
        shards.append(np.fromiter(s, dtype=np.int64).reshape(-1, 3))  # (batches, 3)
    gathered = np.concatenate(shards, axis=1).reshape(-1)  # batch b: rank 0's, rank 1's, ...
    assert (gathered == order).all()


def test_shard_positions_cover_the_sequence_once() -> None:
    for total, world, block in [(12, 1, 5), (12, 3, 1), (24, 2, 5), (30, 3, 4)]:
        parts = [shard_positions(total, world, r, block) for r in range(world)]
        assert {len(p) for p in parts} == {total // world}
        assert sorted(np.concatenate(parts).tolist()) == list(range(total))
    assert shard_positions(8, 2, 1, 1).tolist() == [1, 3, 5, 7]  # block 1: r, r + R, ...
    assert shard_positions(8, 2, 1, 4).tolist() == [4, 5, 6, 7]
    assert shard_positions(10, 2, 0, 3).tolist() == [0, 1, 2, 6, 7]  # tail of 4: halves
    with pytest.raises(DataError, match="block"):
        ShardedSampler(8, block=0)
