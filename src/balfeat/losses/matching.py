"""One-to-one matching of TSC's class centres to its targets (a linear assignment problem).

- :func:`linear_assignment`: the solver used in training, ``scipy.optimize.linear_sum_assignment``
  (as TSC's authors call it), followed by one documented tie rule so that the result does not
  depend on how the solver breaks ties between interchangeable rows (see below).
- :func:`hungarian`: the earlier hand-written Kuhn-Munkres solver, exact and kept as the
  reference the scipy path is tested against (and for its tie behaviour).
- :func:`assign_targets`: centres and targets -> the assignment that maximises the summed cosine.

The tie rule (canonical form). Rows of the cost matrix that are exactly equal (bit for bit) can
exchange their columns without changing the cost; in TSC that is the normal case at the start,
when the centres of the classes not seen yet are all 0. Among such a group of rows the columns
the solver gave to the group are handed out in increasing order, to the rows in increasing order.
Other ties (distinct rows whose different assignments have the same total cost) have no
practical source with real-valued centres and are left as the solver returns them; every answer
is an optimal assignment either way.

Measured (``benchmarks/bench_tsc_matching.py``; the figures are in ``benchmarks/README.md``).
"""

from __future__ import annotations

import numpy as np
import torch

from balfeat.errors import BalfeatError


def _cost_matrix(where: str, cost: torch.Tensor) -> np.ndarray:
    """``cost`` as a float64 numpy (n, n) array, refusing a non-square or non-finite matrix."""
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise BalfeatError(f"{where} needs a square matrix, got {tuple(cost.shape)}")
    a = cost.detach().double().cpu().numpy()
    if not np.isfinite(a).all():
        raise BalfeatError(f"{where}: the cost matrix holds NaN or inf")
    return a


def canonical_ties(cost: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Apply the tie rule: within each group of identical rows, columns in increasing order.

    Args:
        cost: Shape: (n, n).
        col: an assignment, row ``r`` -> column ``col[r]``. Shape: (n,).

    Returns:
        The canonical assignment, of the same total cost. Shape: (n,), int64.
    """
    n = cost.shape[0]
    out = np.asarray(col, dtype=np.int64).copy()
    if n < 2:
        return out
    # Rows that agree on a few sampled columns are candidates (random rows rarely are); only
    # those are compared in full.
    sample = np.unique(np.array([0, n // 3, (2 * n) // 3, n - 1]))
    _, candidate = np.unique(cost[:, sample], axis=0, return_inverse=True)
    candidate = candidate.reshape(-1)
    sizes = np.bincount(candidate)
    groups: dict[tuple[int, bytes], list[int]] = {}
    for r in np.flatnonzero(sizes[candidate] > 1):
        key = (int(candidate[r]), np.ascontiguousarray(cost[r]).tobytes())
        groups.setdefault(key, []).append(int(r))
    for rows in groups.values():
        if len(rows) > 1:
            out[rows] = np.sort(out[rows])
    return out


def linear_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Minimum-cost one-to-one assignment of a square matrix (scipy), in canonical tie form.

    Args:
        cost: Shape: (n, n).

    Returns:
        ``col`` with row ``r`` assigned to column ``col[r]``. Shape: (n,), int64.
    """
    from scipy.optimize import linear_sum_assignment

    a = _cost_matrix("linear_assignment", cost)
    rows, cols = linear_sum_assignment(a)
    col = np.empty(a.shape[0], dtype=np.int64)
    col[rows] = cols
    return torch.from_numpy(canonical_ties(a, col))


def hungarian(cost: torch.Tensor) -> torch.Tensor:
    """Exact minimum-cost assignment of a square cost matrix (Kuhn-Munkres with potentials).

    The shortest-augmenting-path form (one row added at a time, column potentials kept), with the
    scan over the columns done as numpy vector operations: the same arithmetic and the same
    first-minimum tie-breaking as the scalar loop (tested equal to it). It was TSC's solver
    before :func:`linear_assignment`; it stays as that solver's reference.

    Args:
        cost: Shape: (n, n).

    Returns:
        ``col`` with row ``r`` assigned to column ``col[r]``. Shape: (n,), int64.
    """
    m = _cost_matrix("hungarian", cost)
    n = m.shape[0]
    a = np.zeros((n + 1, n + 1))
    a[1:, 1:] = m
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    p = np.zeros(n + 1, dtype=np.int64)  # p[j]: row matched to column j (1-based; 0: none)
    way = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = a[i0] - u[i0] - v
            better = ~used & (cur < minv)
            minv[better] = cur[better]
            way[better] = j0
            masked = np.where(used, np.inf, minv)
            j1 = int(np.argmin(masked))
            delta = masked[j1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = int(way[j0])
            p[j0] = p[j1]
            j0 = j1
    col = np.zeros(n, dtype=np.int64)
    col[p[1:] - 1] = np.arange(n)
    return torch.from_numpy(col)


def assign_targets(centres: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Match class centres to targets, maximising the summed cosine similarity.

    Args:
        centres: class centres (any norm; a zero centre, a class not seen yet, matches any
            target equally well and falls under the tie rule). Shape: (C, dim).
        targets: unit targets. Shape: (C, dim).

    Returns:
        ``assignment[c]`` = index of the target of class c. Shape: (C,), int64.
    """
    c = torch.nn.functional.normalize(centres.double(), dim=1)
    return linear_assignment(-(c @ targets.double().t()))
