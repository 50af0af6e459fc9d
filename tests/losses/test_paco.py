"""PaCo / GPaCo: per-anchor loop from the weighted loss, identity with SupCon-queue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.paco import gpaco_loss, paco_loss
from balfeat.losses.supcon import supcon_queue_loss


def _norm(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=1)


def slow_paco(q, k, y, queue, ql, s, logp, alpha, beta, gamma, t, tc, in_batch):  # type: ignore[no-untyped-def]
    terms = []
    for i in range(q.shape[0]):
        keys, labs = [], []
        if in_batch:
            for j in range(q.shape[0]):
                if j != i:
                    keys.append(q[j])
                    labs.append(int(y[j]))
            for j in range(q.shape[0]):
                keys.append(k[j])
                labs.append(int(y[j]))
        else:
            keys.append(k[i])
            labs.append(int(y[i]))
        if queue is not None:
            for j in range(queue.shape[0]):
                keys.append(queue[j])
                labs.append(int(ql[j]))
        lk = [q[i] @ x / t for x in keys]
        den_terms = [lg + torch.log(torch.tensor(gamma, dtype=q.dtype)) for lg in lk]
        cl = None
        if s is not None:
            cl = (s[i] + logp) / tc
            den_terms += list(cl)
        den = torch.stack(den_terms).logsumexp(0)
        num, w = 0.0, 0.0
        for lg, lab in zip(lk, labs, strict=False):
            if lab == int(y[i]):
                num = num + alpha * (lg - den)
                w += alpha
        if cl is not None:
            num = num + beta * (cl[int(y[i])] - den)
            w += beta
        terms.append(-num / w)
    return torch.stack(terms).mean()


LABELS = torch.tensor([0, 0, 3, 5, 1, 1])  # 3 single, 5 absent from queue
QLAB = torch.tensor([0, 1, 1, 0, 2, -1, 0, 3, 2, 1, 1, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_batch", [True, False])
def test_paco_matches_loop(dtype: torch.dtype, in_batch: bool) -> None:
    q = _norm(6, 8, dtype=dtype, seed=1).requires_grad_()
    k = _norm(6, 8, dtype=dtype, seed=2)
    queue = _norm(12, 8, dtype=dtype, seed=3)
    s = torch.randn(6, 7, dtype=dtype, generator=torch.Generator().manual_seed(4)).requires_grad_()
    logp = torch.log_softmax(torch.randn(7, dtype=dtype), 0)
    kw = dict(alpha=0.05, beta=1.0, gamma=0.7, temperature=0.2, centre_temperature=0.5)
    fast = paco_loss(q, k, LABELS, queue, QLAB, s, logp, in_batch=in_batch, **kw)  # type: ignore[arg-type]
    slow = slow_paco(q, k, LABELS, queue, QLAB, s, logp, 0.05, 1.0, 0.7, 0.2, 0.5, in_batch)
    gf, gs = torch.autograd.grad(fast, (q, s)), torch.autograd.grad(slow, (q, s))
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast, slow, atol=tol, rtol=tol)
    for a, b in zip(gf, gs, strict=False):
        assert torch.allclose(a, b, atol=tol, rtol=tol)


def test_gpaco_matches_loop() -> None:
    """Both views are anchors; each contrasts with the other 2B - 1 rows and the centres."""
    q = _norm(6, 8, dtype=torch.float64, seed=5).requires_grad_()
    k = _norm(6, 8, dtype=torch.float64, seed=6).requires_grad_()
    s = torch.randn(12, 7, dtype=torch.float64).requires_grad_()
    fast = gpaco_loss(q, k, LABELS, s, None, alpha=0.1, temperature=0.2)
    z, y = torch.cat([q, k]), torch.cat([LABELS, LABELS])
    terms = []
    for i in range(12):
        others = [j for j in range(12) if j != i]
        lk = [z[i] @ z[j] / 0.2 for j in others]
        den = torch.cat([torch.stack(lk), s[i]]).logsumexp(0)
        pos = [lg for lg, j in zip(lk, others, strict=True) if int(y[j]) == int(y[i])]
        num = 0.1 * sum(lg - den for lg in pos) + (s[i, int(y[i])] - den)
        terms.append(-num / (0.1 * len(pos) + 1.0))
    slow = torch.stack(terms).mean()
    assert torch.allclose(fast, slow, atol=1e-10)
    gf, gs = torch.autograd.grad(fast, (q, k, s)), torch.autograd.grad(slow, (q, k, s))
    for a, b in zip(gf, gs, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("alpha", [1.0, 0.05])
def test_paco_without_centres_is_supcon_queue(alpha: float) -> None:
    """No centres, MoCo-style contrast [k_i, queue], any alpha > 0 (alpha cancels in the
    weighted mean over positives), gamma = 1, no T/T_base scaling, mean over the batch."""
    q = _norm(6, 8, dtype=torch.float64, seed=7)
    k = _norm(6, 8, dtype=torch.float64, seed=8)
    queue = _norm(12, 8, dtype=torch.float64, seed=9)
    a = paco_loss(q, k, LABELS, queue, QLAB, None, alpha=alpha, temperature=0.07, in_batch=False)
    b = supcon_queue_loss(q, k, queue, QLAB, LABELS, 0.07)
    assert torch.allclose(a, b, atol=1e-12)


def test_paco_alpha_zero_without_centres_rejected() -> None:
    q = _norm(2, 4, dtype=torch.float32, seed=1)
    with pytest.raises(BalfeatError):
        paco_loss(q, q, torch.tensor([0, 1]), alpha=0.0)


def test_paco_queue_path_builds_no_batch_by_queue_bool_tensor() -> None:
    """Every boolean tensor created while computing the loss is recorded; none is (B, K)."""
    from torch.overrides import TorchFunctionMode

    seen: list[tuple[int, ...]] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.bool:
                seen.append(tuple(out.shape))
            return out

    q = _norm(6, 8, dtype=torch.float32, seed=1).requires_grad_()
    k = _norm(6, 8, dtype=torch.float32, seed=2)
    queue = _norm(10, 8, dtype=torch.float32, seed=3)
    s = torch.randn(6, 7)
    with Spy():
        loss = paco_loss(q, k, LABELS, queue, QLAB[:10], s, None, in_batch=True)
        loss.backward()
    assert (6, 12) in seen  # the batch-sized same-class mask (B, 2B) is allowed and seen
    assert (6, 10) not in seen
