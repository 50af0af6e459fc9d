"""SupCon: per-anchor loops from eq. 2 of Khosla et al., the KCL identity, no (B, K) mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from balfeat.losses.contrastive import kcl_loss, select_positives
from balfeat.losses.supcon import supcon_loss, supcon_queue_loss


def _norm(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=1)


def slow_supcon(z: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    terms = []
    for i in range(z.shape[0]):
        others = [a for a in range(z.shape[0]) if a != i]
        pos = [p for p in others if int(y[p]) == int(y[i])]
        if not pos:  # no positive: contributes 0, still counted in the mean (reference code)
            terms.append(z.new_zeros(()))
            continue
        den = torch.stack([z[i] @ z[a] / t for a in others]).logsumexp(0)
        terms.append(-sum(z[i] @ z[p] / t - den for p in pos) / len(pos))
    return torch.stack(terms).mean()


def slow_supcon_queue(q, k, queue, ql, y, t):  # type: ignore[no-untyped-def]
    terms = []
    for i in range(q.shape[0]):
        keys = [k[i]] + [queue[j] for j in range(queue.shape[0])]
        pos = [k[i]] + [queue[j] for j in range(queue.shape[0]) if int(ql[j]) == int(y[i])]
        den = torch.stack([q[i] @ x / t for x in keys]).logsumexp(0)
        terms.append(-sum(q[i] @ p / t - den for p in pos) / len(pos))
    return torch.stack(terms).mean()


# classes: 0 twice, 3 once (single-sample class), 5 absent from the queue, dupes in the queue
LABELS = torch.tensor([0, 0, 3, 5, 1, 1])
QLAB = torch.tensor([0, 1, 1, 0, 2, -1, 0, 3, 2, 1, 1, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_supcon_in_batch_matches_loop(dtype: torch.dtype) -> None:
    z = _norm(12, 8, dtype=dtype, seed=1).requires_grad_()
    y = torch.cat([LABELS, LABELS])
    y[2] = 7  # class 7: a single sample overall -> anchor without positive, counts as 0
    fast = supcon_loss(z, y, 0.1)
    (g_fast,) = torch.autograd.grad(fast, z)
    slow = slow_supcon(z, y, 0.1)
    (g_slow,) = torch.autograd.grad(slow, z)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast, slow, atol=tol, rtol=tol)
    assert torch.allclose(g_fast, g_slow, atol=tol, rtol=tol)


def test_supcon_anchor_without_positive_counts_zero_in_the_mean() -> None:
    # one view, classes 0 (x2) and 1, 2 (x1): only the two class-0 rows have a positive
    z = _norm(4, 8, dtype=torch.float64, seed=3)
    y = torch.tensor([0, 0, 1, 2])
    lg = z @ z.t() / 0.1
    lse0 = torch.cat([lg[0, 1:]]).logsumexp(0)
    lse1 = torch.cat([lg[1, :1], lg[1, 2:]]).logsumexp(0)
    want = ((lse0 - lg[0, 1]) + (lse1 - lg[1, 0])) / 4  # mean over all 4 anchors
    assert torch.allclose(supcon_loss(z, y, 0.1), want, atol=1e-12)


def test_supcon_base_temperature_scales_by_t_over_t_base() -> None:
    z = _norm(8, 8, dtype=torch.float64, seed=4)
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 3])
    plain = supcon_loss(z, y, 0.1)
    assert torch.allclose(supcon_loss(z, y, 0.1, base_temperature=0.07), plain * 0.1 / 0.07)
    assert torch.allclose(supcon_loss(z, y, 0.1, base_temperature=0.1), plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_supcon_queue_matches_loop(dtype: torch.dtype) -> None:
    q = _norm(6, 8, dtype=dtype, seed=2).requires_grad_()
    k = _norm(6, 8, dtype=dtype, seed=3)
    queue = _norm(12, 8, dtype=dtype, seed=4).requires_grad_()
    fast = supcon_queue_loss(q, k, queue, QLAB, LABELS, 0.07)
    gf = torch.autograd.grad(fast, (q, queue))
    slow = slow_supcon_queue(q, k, queue, QLAB, LABELS, 0.07)
    gs = torch.autograd.grad(slow, (q, queue))
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast, slow, atol=tol, rtol=tol)
    for a, b in zip(gf, gs, strict=False):
        assert torch.allclose(a, b, atol=tol, rtol=tol)


def test_supcon_queue_is_kcl_v1_with_every_positive() -> None:
    q = _norm(6, 8, dtype=torch.float64, seed=5).requires_grad_()
    k = _norm(6, 8, dtype=torch.float64, seed=6)
    queue = _norm(12, 8, dtype=torch.float64, seed=7)
    a = supcon_queue_loss(q, k, queue, QLAB, LABELS, 0.07)
    b = kcl_loss(q, k, queue, select_positives(LABELS, QLAB, 12, "queue_order"), 0.07, "v1")
    assert torch.allclose(a, b, atol=1e-12)
    ga, gb = torch.autograd.grad(a, q)[0], torch.autograd.grad(b, q)[0]
    assert torch.allclose(ga, gb, atol=1e-12)
    # with posk below the class count the two differ (KCL keeps some same-class keys negative)
    c = kcl_loss(q, k, queue, select_positives(LABELS, QLAB, 1, "queue_order"), 0.07, "v1")
    assert not torch.allclose(a, c)


def test_supcon_queue_builds_no_batch_by_queue_bool_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every boolean tensor created while computing the loss is recorded; none is (B, K)."""
    seen: list[tuple[int, ...]] = []
    from torch.overrides import TorchFunctionMode

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.bool:
                seen.append(tuple(out.shape))
            return out

    q = _norm(6, 8, dtype=torch.float32, seed=8)
    k = _norm(6, 8, dtype=torch.float32, seed=9)
    queue = _norm(12, 8, dtype=torch.float32, seed=10)
    with Spy():
        supcon_queue_loss(q, k, queue, QLAB, LABELS, 0.07)
    assert seen, "the spy must see the (K,) validity mask at least"
    assert (6, 12) not in seen
