"""TSC: loop check of the loss, exact assignment, targets spread and saved."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.contrastive import select_positives
from balfeat.losses.tsc import (
    assign_targets,
    hungarian,
    load_targets,
    save_targets,
    tsc_loss,
    uniform_targets,
)


def _norm(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=1)


def test_hungarian_is_optimal_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 6):
        cost = torch.randn(n, n, generator=g, dtype=torch.float64)
        col = hungarian(cost)
        best = min(
            sum(float(cost[i, p[i]]) for i in range(n)) for p in itertools.permutations(range(n))
        )
        assert sorted(col.tolist()) == list(range(n))
        assert sum(float(cost[i, col[i]]) for i in range(n)) == pytest.approx(best)


def _hungarian_scalar(cost: torch.Tensor) -> list[int]:
    """The scalar shortest-augmenting-path loop (e-maxx form), obviously slow, as a reference."""
    n = cost.shape[0]
    a = cost.double().tolist()
    inf = float("inf")
    u, v, p, way = [0.0] * (n + 1), [0.0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (n + 1), [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = a[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col = [0] * n
    for j in range(1, n + 1):
        col[p[j] - 1] = j - 1
    return col


def test_hungarian_equals_the_scalar_loop_incl_ties_and_refuses_nan() -> None:
    g = torch.Generator().manual_seed(1)
    for n in (3, 17, 60):
        cost = torch.randn(n, n, generator=g, dtype=torch.float64)
        assert hungarian(cost).tolist() == _hungarian_scalar(cost)
        tied = torch.randint(0, 3, (n, n), generator=g).double()  # many equal costs
        assert hungarian(tied).tolist() == _hungarian_scalar(tied)
    with pytest.raises(BalfeatError, match="NaN or inf"):
        hungarian(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(BalfeatError, match="square"):
        hungarian(torch.zeros(2, 3))


def test_assignment_recovers_a_permutation() -> None:
    targets = uniform_targets(6, 4, steps=300)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    centres = targets[perm] * 2.0 + 0.01 * torch.randn(6, 4, dtype=torch.float64)
    assert torch.equal(assign_targets(centres, targets), perm)


def test_targets_spread_seeded_and_round_trip(tmp_path: Path) -> None:
    a = uniform_targets(4, 3, steps=3000, lr=0.05, seed=1)
    assert torch.equal(a, uniform_targets(4, 3, steps=3000, lr=0.05, seed=1))
    cos = a @ a.t() - 2 * torch.eye(4, dtype=a.dtype)
    assert float(cos.max()) < -0.3  # a regular simplex in 3-d has cos = -1/3
    save_targets(tmp_path / "t.pt", a)
    assert torch.equal(load_targets(tmp_path / "t.pt", 4, 3), a)
    with pytest.raises(BalfeatError):
        load_targets(tmp_path / "t.pt", 5, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tsc_loss_matches_loop(dtype: torch.dtype) -> None:
    y = torch.tensor([0, 0, 3, 5, 1])
    ql = torch.tensor([0, 1, 1, 0, 2, -1, 0, 3, 2, 1])
    q = _norm(5, 8, dtype=dtype, seed=1).requires_grad_()
    k = _norm(5, 8, dtype=dtype, seed=2)
    queue = _norm(10, 8, dtype=dtype, seed=3)
    tg = _norm(6, 8, dtype=dtype, seed=4)
    t, lam = 0.1, 0.5
    pos = select_positives(y, ql, 2, "queue_order")
    fast = tsc_loss(q, k, queue, pos, y, tg, temperature=t, target_weight=lam)
    terms = []
    for i in range(5):
        keys = [k[i], *list(queue), *list(tg)]
        den = torch.stack([q[i] @ x / t for x in keys]).logsumexp(0)
        same = [j for j in range(10) if int(ql[j]) == int(y[i])][:2]
        pos = [k[i]] + [queue[j] for j in same]
        num = sum(q[i] @ p / t - den for p in pos) + lam * (q[i] @ tg[int(y[i])] / t - den)
        terms.append(-num / (len(pos) + 1))  # the target counts as one positive in the mean
    slow = torch.stack(terms).mean()
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast, slow, atol=tol, rtol=tol)
    (gf,), (gs,) = torch.autograd.grad(fast, q), torch.autograd.grad(slow, q)
    assert torch.allclose(gf, gs, atol=tol, rtol=tol)


def test_tsc_builds_no_batch_by_queue_bool_tensor() -> None:
    from torch.overrides import TorchFunctionMode

    seen: list[tuple[int, ...]] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.bool:
                seen.append(tuple(out.shape))
            return out

    y = torch.tensor([0, 0, 3, 5, 1])
    ql = torch.tensor([0, 1, 1, 0, 2, -1, 0, 3, 2, 1, 1])
    q = _norm(5, 8, dtype=torch.float32, seed=1).requires_grad_()
    with Spy():
        loss = tsc_loss(
            q,
            q.detach(),
            _norm(11, 8, dtype=torch.float32, seed=2),
            select_positives(y, ql, 2),
            y,
            _norm(6, 8, dtype=torch.float32, seed=3),
        )
        loss.backward()
    assert seen and (5, 11) not in seen


def test_target_energy_temperature_defaults_to_the_authors_0_07() -> None:
    a = uniform_targets(5, 3, steps=40, seed=2)
    assert torch.equal(a, uniform_targets(5, 3, steps=40, seed=2, temperature=0.07))
    assert not torch.equal(a, uniform_targets(5, 3, steps=40, seed=2, temperature=0.1))
