"""Heads, KeyQueue, momentum_update, SplitBatchNorm / split_forward / shuffle-BN."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from balfeat.errors import BalfeatError
from balfeat.models.batchnorm import (
    SplitBatchNorm,
    batch_shuffle_ddp,
    batch_unshuffle_ddp,
    convert_split_batchnorm,
    split_forward,
)
from balfeat.models.heads import LinearHead, MLPHead, make_head
from balfeat.models.momentum import momentum_update
from balfeat.models.queue import KeyQueue


def test_heads_shapes_and_keys() -> None:
    assert LinearHead(8, 4)(torch.randn(3, 8)).shape == (3, 4)
    mlp = MLPHead(8, 4)
    assert mlp(torch.randn(3, 8)).shape == (3, 4)
    assert set(mlp.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert mlp.fc1.out_features == 8


def test_mlp_head_with_batch_norm_normalises_the_hidden_layer() -> None:
    torch.manual_seed(0)
    head = MLPHead(8, 4, batch_norm=True)
    assert [type(m) for m in head.children()] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.bn is not None and head.bn.num_features == 8
    x = torch.randn(6, 8)
    head.train()
    h = head.fc1(x)
    want = head.fc2(torch.relu((h - h.mean(0)) / (h.var(0, unbiased=False) + 1e-5).sqrt()))
    torch.testing.assert_close(head(x), want, rtol=1e-5, atol=1e-5)
    assert isinstance(make_head(8, 4, mlp=True, batch_norm=True), MLPHead)
    assert isinstance(make_head(8, 4, mlp=False), LinearHead)
    with pytest.raises(ValueError, match="batch_norm needs mlp"):
        make_head(8, 4, mlp=False, batch_norm=True)


def test_queue_init_is_normalised_and_labels_minus_one() -> None:
    q = KeyQueue(10, 4, with_labels=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(10))
    assert q.labels.tolist() == [-1] * 10 and int(q.ptr) == 0 and not q.full
    assert set(q.state_dict()) == {"keys", "labels", "ptr", "count"}


def test_queue_fifo_wraps_when_size_not_multiple_of_batch() -> None:
    q = KeyQueue(7, 2, with_labels=True)
    written: list[int] = []
    for step in range(4):  # 4 batches of 3 = 12 keys into 7 slots
        ids = torch.arange(step * 3, step * 3 + 3)
        keys = torch.stack([ids.float(), -ids.float()], dim=1)
        q.enqueue(keys, ids + 100)
        written += ids.tolist()
    # slot s holds the latest key written there: key i goes to slot i % 7
    expected = [max(i for i in written if i % 7 == s) for s in range(7)]
    assert q.keys[:, 0].long().tolist() == expected
    assert q.labels.tolist() == [e + 100 for e in expected]
    assert int(q.ptr) == 12 % 7 and q.full


def test_queue_more_keys_than_size_and_errors() -> None:
    q = KeyQueue(4, 1)
    q.enqueue(torch.arange(10.0).unsqueeze(1))
    # keys 6..9 kept, in the slots they would have reached: i % 4
    assert q.keys[:, 0].tolist() == [8.0, 9.0, 6.0, 7.0]
    assert int(q.ptr) == 10 % 4
    with pytest.raises(BalfeatError, match="labels"):
        q.enqueue(torch.zeros(1, 1), torch.zeros(1))
    with pytest.raises(BalfeatError, match="keys must be"):
        q.enqueue(torch.zeros(2, 3))


def test_momentum_update() -> None:
    a: Any = nn.Linear(3, 2)
    b: Any = nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    momentum_update(a, b, 0.9)
    torch.testing.assert_close(b.weight, 0.9 * wb + 0.1 * wa)
    momentum_update(a, b, 0.0)
    torch.testing.assert_close(b.weight, a.weight)
    torch.testing.assert_close(a.weight, wa)


def _bn_net() -> Any:
    torch.manual_seed(0)
    net: Any = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def test_split_batchnorm_equals_per_group_batchnorm() -> None:
    x = torch.randn(12, 2, 4, 4)
    ref = _bn_net()
    split: Any = convert_split_batchnorm(_bn_net(), 4)
    assert isinstance(split[1], SplitBatchNorm)
    assert set(split.state_dict()) == set(ref.state_dict())
    out = split(x)
    # group s = samples s, s+4, s+8 normalised with their own statistics
    for s in range(4):
        group = _bn_net()
        torch.testing.assert_close(out[s::4], group(x[s::4]), rtol=1e-5, atol=1e-5)
    # running stats: mean over groups of the per-group updates
    means = []
    for s in range(4):
        g = _bn_net()
        g(x[s::4])
        means.append(g[1].running_mean)
    torch.testing.assert_close(split[1].running_mean, torch.stack(means).mean(0))
    split.eval()
    ref.load_state_dict(split.state_dict())
    ref.eval()
    torch.testing.assert_close(split(x), ref(x))
    with pytest.raises(BalfeatError, match="multiple of num_splits"):
        split.train()(torch.randn(6, 2, 4, 4))


def test_split_forward_equals_per_chunk_forward() -> None:
    x = torch.randn(10, 2, 4, 4)
    out = split_forward(_bn_net(), x, 3)
    parts = x.tensor_split(3)
    expected = torch.cat([_bn_net()(p) for p in parts])
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, _bn_net()(x))
    torch.testing.assert_close(split_forward(_bn_net(), x, 1), _bn_net()(x))


def test_shuffle_bn_is_identity_in_one_process() -> None:
    x = torch.randn(5, 3)
    y, idx = batch_shuffle_ddp(x)
    assert idx is None and torch.equal(y, x)
    assert torch.equal(batch_unshuffle_ddp(y, idx), x)
