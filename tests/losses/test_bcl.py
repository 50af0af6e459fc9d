"""BCL: per-anchor loop from the class-averaged loss, gradient, prototypes-only class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from balfeat.losses.bcl import bcl_loss, bcl_total, logit_adjusted_ce


def _norm(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=1)


def slow_bcl(z, y, protos, t):  # type: ignore[no-untyped-def]
    allf = list(z) + list(protos)
    alll = [int(v) for v in y] + list(range(protos.shape[0]))
    terms = []
    for i in range(z.shape[0]):
        members: dict[int, list[torch.Tensor]] = {}
        for j, (f, lab) in enumerate(zip(allf, alll, strict=False)):
            if j != i:
                members.setdefault(lab, []).append(z[i] @ f / t)
        den = torch.log(sum(torch.stack(v).exp().sum() / len(v) for v in members.values()))
        pos = members[int(y[i])]
        terms.append(-sum(p - den for p in pos) / len(pos))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bcl_matches_loop(dtype: torch.dtype) -> None:
    y = torch.tensor([0, 0, 3, 1, 1, 2])  # class 4 only as a prototype, 3 and 2 single
    y2 = torch.cat([y, y])
    z = _norm(12, 8, dtype=dtype, seed=1).requires_grad_()
    protos = _norm(5, 8, dtype=dtype, seed=2).requires_grad_()
    fast = bcl_loss(z, y2, protos, 0.07)
    slow = slow_bcl(z, y2, protos, 0.07)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast, slow, atol=tol, rtol=tol)
    gf = torch.autograd.grad(fast, (z, protos))
    gs = torch.autograd.grad(slow, (z, protos))
    for a, b in zip(gf, gs, strict=True):
        assert torch.allclose(a, b, atol=tol, rtol=tol)


def test_bcl_total_and_la_ce() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2])
    logp = torch.log(torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64))
    ce = logit_adjusted_ce(logits, y, logp)
    assert torch.allclose(ce, F.cross_entropy(logits + logp, y))
    z = _norm(8, 5, dtype=torch.float64, seed=3)
    p = _norm(3, 5, dtype=torch.float64, seed=4)
    tot = bcl_total(logits, y, z, p, logp, ce_weight=2.0, bcl_weight=0.6)
    assert torch.allclose(tot, 2.0 * ce + 0.6 * bcl_loss(z, torch.cat([y, y]), p))
