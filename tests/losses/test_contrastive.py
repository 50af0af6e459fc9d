"""moco_loss / kcl_loss against slow per-anchor references written here."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import (
    given_positives,
    kcl_loss,
    kcl_select_positives,
    moco_loss,
    select_positives,
)


def _normed(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


def ref_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    losses = []
    for i in range(q.shape[0]):
        logits = [torch.dot(q[i], k[i]) / t] + [
            torch.dot(q[i], queue[j]) / t for j in range(len(queue))
        ]
        row = torch.stack(logits)
        losses.append(-torch.log_softmax(row, dim=0)[0])
    return torch.stack(losses).mean()


def ref_kcl(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    queue_labels: torch.Tensor,
    labels: torch.Tensor,
    t: float,
    chosen: list[list[int]],
    loss_type: str,
) -> torch.Tensor:
    """Reference: build the full logit row of each anchor, apply the definition literally."""
    losses = []
    for i in range(q.shape[0]):
        row = [torch.dot(q[i], k[i]) / t]
        for j in range(queue.shape[0]):
            same = int(queue_labels[j]) == int(labels[i])
            if loss_type == "v2" and same and j not in chosen[i]:
                row.append(torch.zeros((), dtype=q.dtype))
            else:
                row.append(torch.dot(q[i], queue[j]) / t)
        logits = torch.stack(row)
        logp = torch.log_softmax(logits, dim=0)
        pos = [0] + [j + 1 for j in chosen[i]]
        if loss_type == "sum":
            losses.append(-torch.logsumexp(logp[pos], dim=0))
        else:
            target = torch.zeros_like(logits)
            target[pos] = 1.0 / len(pos)
            losses.append(-(target * logp).sum())
    return torch.stack(losses).mean()


def ref_select_queue_order(
    labels: torch.Tensor, queue_labels: torch.Tensor, posk: int
) -> list[list[int]]:
    out = []
    for lab in labels.tolist():
        same = [j for j, ql in enumerate(queue_labels.tolist()) if ql == lab]
        out.append(same[:posk])
    return out


def _chosen_lists(positives: torch.Tensor) -> list[list[int]]:
    return [[int(p) for p in row if p >= 0] for row in positives]


def _case(
    seed: int, b: int, kq: int, dim: int, n_classes: int, fill: int | None = None
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = _normed(b, dim, gen=gen).requires_grad_(True)
    k = _normed(b, dim, gen=gen).requires_grad_(True)
    queue = _normed(kq, dim, gen=gen).requires_grad_(True)
    queue_labels = torch.randint(0, n_classes, (kq,), generator=gen)
    if fill is not None:
        queue_labels[fill:] = -1
    labels = torch.randint(0, n_classes, (b,), generator=gen)
    return q, k, queue, queue_labels, labels


def _compare(fast: torch.Tensor, ref: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    g_fast = torch.autograd.grad(fast, tensors, retain_graph=True)
    g_ref = torch.autograd.grad(ref, tensors, retain_graph=True)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)
    for a, r in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("t", [0.07, 0.5, 1.0])
def test_moco_loss_matches_reference_and_cross_entropy(t: float) -> None:
    q, k, queue, _, _ = _case(0, 5, 11, 6, 3)
    fast = moco_loss(q, k, queue, t)
    _compare(fast, ref_moco(q, k, queue, t), [q, k, queue])
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / t
    ce = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(fast, ce)


@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("selection", ["random", "queue_order"])
def test_kcl_matches_reference_random_cases(loss_type: Any, seed: int, selection: Any) -> None:
    q, k, queue, ql, labels = _case(seed, 7, 23, 5, 4)
    gen = torch.Generator().manual_seed(seed)
    pos = kcl_select_positives(labels, ql, 3, selection, gen)
    chosen = _chosen_lists(pos)
    if selection == "queue_order":
        assert chosen == ref_select_queue_order(labels, ql, 3)
    fast = kcl_loss(q, k, queue, given_positives(pos, labels, ql), 0.1, loss_type)
    ref = ref_kcl(q, k, queue, ql, labels, 0.1, chosen, loss_type)
    _compare(fast, ref, [q, k, queue])
    # Without precomputed positives, the same generator seed gives the same loss.
    again = kcl_loss(
        q,
        k,
        queue,
        select_positives(labels, ql, 3, selection, torch.Generator().manual_seed(seed)),
        0.1,
        loss_type,
    )
    torch.testing.assert_close(again, fast)


def test_random_selection_is_same_class_distinct_and_complete_when_few() -> None:
    gen = torch.Generator().manual_seed(3)
    ql = torch.randint(0, 5, (200,), generator=gen)
    ql[:10] = -1
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 0])
    pos = kcl_select_positives(labels, ql, 6, "random", gen)
    for i, row in enumerate(pos.tolist()):
        got = [p for p in row if p >= 0]
        assert len(got) == 6 and len(set(got)) == 6
        assert all(int(ql[p]) == int(labels[i]) for p in got)
    # Classes with <= posk keys: all of them are used.
    ql2 = torch.tensor([2, 0, 2, -1, 1, 2, 0])
    pos2 = kcl_select_positives(torch.tensor([2, 0, 3]), ql2, 4, "random", gen)
    assert sorted(p for p in pos2[0].tolist() if p >= 0) == [0, 2, 5]
    assert sorted(p for p in pos2[1].tolist() if p >= 0) == [1, 6]
    assert pos2[2].tolist() == [-1, -1, -1, -1]
    assert pos2[0, 3] == -1 and pos2[1, 2:].tolist() == [-1, -1]  # valid entries first


def test_random_selection_is_uniform() -> None:
    ql = torch.zeros(8, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    pos = kcl_select_positives(torch.zeros(4000, dtype=torch.long), ql, 3, "random", gen)
    freq = torch.bincount(pos.flatten(), minlength=8).double() / pos.numel()
    uniform = torch.full((8,), 1 / 8, dtype=torch.float64)
    assert torch.allclose(freq, uniform, atol=0.02)
    # Each of the 56 3-subsets appears.
    subsets = {tuple(sorted(r)) for r in pos.tolist()}
    assert len(subsets) == math.comb(8, 3)


@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
def test_kcl_all_same_class_used_when_k_large(loss_type: Any) -> None:
    q, k, queue, ql, labels = _case(5, 6, 15, 4, 3)
    pos = kcl_select_positives(labels, ql, 20, "random", torch.Generator().manual_seed(0))
    chosen = _chosen_lists(pos)
    for i, row in enumerate(chosen):
        assert sorted(row) == [j for j in range(15) if int(ql[j]) == int(labels[i])]
    fast = kcl_loss(q, k, queue, given_positives(pos, labels, ql), 0.2, loss_type)
    _compare(fast, ref_kcl(q, k, queue, ql, labels, 0.2, chosen, loss_type), [q, k, queue])
    if loss_type == "v2":  # nothing left unchosen: v2 == v1
        v1 = kcl_loss(q, k, queue, given_positives(pos, labels, ql), 0.2, "v1")
        torch.testing.assert_close(fast, v1)


@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
def test_kcl_without_same_class_keys_is_moco(loss_type: Any) -> None:
    q, k, queue, _, _ = _case(7, 5, 9, 4, 3)
    ql = torch.full((9,), 7)
    ql[:3] = -1  # partly unfilled queue
    labels = torch.tensor([0, 1, 2, 0, 1])
    fast = kcl_loss(q, k, queue, select_positives(labels, ql, 6), 0.07, loss_type)
    _compare(fast, moco_loss(q, k, queue, 0.07), [q, k, queue])


@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
def test_kcl_duplicated_labels_and_empty_queue_slots(loss_type: Any) -> None:
    q, k, queue, ql, _ = _case(11, 8, 19, 5, 2, fill=12)
    labels = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1])
    pos = kcl_select_positives(labels, ql, 2, "random", torch.Generator().manual_seed(1))
    chosen = _chosen_lists(pos)
    assert all(p < 12 for row in chosen for p in row)
    fast = kcl_loss(q, k, queue, given_positives(pos, labels, ql), 0.1, loss_type)
    _compare(fast, ref_kcl(q, k, queue, ql, labels, 0.1, chosen, loss_type), [q, k, queue])


@pytest.mark.parametrize("t", [0.01, 0.02, 10.0, 100.0])
@pytest.mark.parametrize("loss_type", ["v1", "v2", "sum"])
def test_kcl_temperature_extremes(t: float, loss_type: Any) -> None:
    q, k, queue, ql, labels = _case(13, 6, 17, 5, 3)
    pos = kcl_select_positives(labels, ql, 4, "queue_order")
    fast = kcl_loss(q, k, queue, given_positives(pos, labels, ql), t, loss_type)
    assert torch.isfinite(fast)
    ref = ref_kcl(q, k, queue, ql, labels, t, _chosen_lists(pos), loss_type)
    _compare(fast, ref, [q, k, queue])


def test_kcl_posk_zero_is_moco_and_v1_v2_sum_differ() -> None:
    q, k, queue, ql, labels = _case(17, 6, 30, 5, 2)
    torch.testing.assert_close(
        kcl_loss(q, k, queue, select_positives(labels, ql, 0), 0.1), moco_loss(q, k, queue, 0.1)
    )
    pos = kcl_select_positives(labels, ql, 2, "queue_order")
    lts: list[Any] = ["v1", "v2", "sum"]
    vals = [
        float(kcl_loss(q, k, queue, given_positives(pos, labels, ql), 0.1, lt).detach())
        for lt in lts
    ]
    assert len({round(v, 8) for v in vals}) == 3
    assert vals[2] < vals[0]  # -log sum p <= -mean log p


def test_kcl_float32_no_dense_mask_shapes() -> None:
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=gen, dtype=torch.float32), dim=1)
    queue = F.normalize(torch.randn(50, 8, generator=gen, dtype=torch.float32), dim=1)
    ql = torch.randint(0, 3, (50,), generator=gen)
    sel = select_positives(torch.tensor([0, 1, 2, 0]), ql, 6, "random", gen)
    loss = kcl_loss(q, q, queue, sel, 0.07, "v2")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_kcl_bad_arguments() -> None:
    q, k, queue, ql, labels = _case(0, 3, 5, 4, 2)
    with pytest.raises(BalfeatError, match="loss_type"):
        kcl_loss(q, k, queue, select_positives(labels, ql, 2), 0.1, "v3")  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="selection"):
        kcl_loss(q, k, queue, select_positives(labels, ql, 2, "top"), 0.1)  # type: ignore[arg-type]
    with pytest.raises(BalfeatError, match="temperature"):
        moco_loss(q, k, queue, 0.0)
    with pytest.raises(BalfeatError, match="negative class label"):
        kcl_loss(q, k, queue, select_positives(torch.tensor([0, -1, 1]), ql, 2), 0.1)


def test_second_backward_through_the_reused_buffer_is_refused() -> None:
    q, k, queue, _, _ = _case(0, 3, 5, 4, 2)
    loss = moco_loss(q, k, queue, 0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        loss.backward()


def test_selection_sorts_once_and_v2_reuses_its_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import balfeat.losses.contrastive as contrastive

    q, k, queue, ql, labels = _case(21, 6, 30, 5, 3)
    calls = []
    real = contrastive.class_blocks

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(contrastive, "class_blocks", counting)
    sel = select_positives(labels, ql, 2, "random", torch.Generator().manual_seed(0))
    kcl_loss(q, k, queue, sel, 0.1, "v2")
    assert len(calls) == 1


@pytest.mark.parametrize("K", [1024, 4096, 65536])
def test_queue_order_equals_the_reference_topk_on_a_0_1_mask_on_cpu(K: int) -> None:
    """The reference KCL (BalFeat moco/kcl_builder.py:164-171) takes ``topk(posk)`` of the 0/1
    same-class mask and multiplies by the mask (dropping picked zeros). On the CPU, at the
    power-of-two queue sizes of the recipes, that keeps the same positions as
    ``selection="queue_order"`` (the first posk same-class keys), classes with fewer than posk
    keys included. topk's tie order is the kernel's: at K = 257 the CPU picks others, and the
    CUDA kernel the authors ran is not checked here (no GPU in the tests)."""
    gen = torch.Generator().manual_seed(K)
    posk, batch, classes = 6, 128, 1000
    weights = torch.tensor([0.01 ** (i / (classes - 1)) for i in range(classes)])
    queue_labels = torch.multinomial(weights, K, True, generator=gen)
    queue_labels[: K // 8] = -1  # empty slots
    labels = torch.multinomial(weights, batch, True, generator=gen)
    mask = (queue_labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    _, pred = mask.topk(posk, 1, True, True)
    picked = torch.zeros(batch, K).scatter_(1, pred, 1.0) * mask
    reference = [sorted(torch.nonzero(r).flatten().tolist()) for r in picked]
    pos = select_positives(labels, queue_labels, posk, "queue_order").positions
    assert [sorted(r) for r in _chosen_lists(pos)] == reference
    assert any(len(r) < posk for r in reference)  # the few-keys case is covered
    rand = select_positives(labels, queue_labels, posk, "random", torch.Generator().manual_seed(0))
    assert [sorted(r) for r in _chosen_lists(rand.positions)] != reference
