"""TSC's matching by scipy equals the hand-written Hungarian solver, ties by a stated rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from balfeat.errors import BalfeatError
from balfeat.losses.matching import (
    assign_targets,
    canonical_ties,
    hungarian,
    linear_assignment,
)


def _cost(col: torch.Tensor, cost: torch.Tensor) -> float:
    return float(cost[torch.arange(cost.shape[0]), col].sum())


@pytest.mark.parametrize("n", [1, 2, 3, 17, 60, 200])
def test_scipy_equals_the_hungarian_solver_on_random_costs(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    for _ in range(3):
        cost = torch.randn(n, n, generator=g, dtype=torch.float64)
        assert torch.equal(linear_assignment(cost), hungarian(cost))


def test_scipy_is_optimal_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (2, 5, 6):
        cost = torch.randint(0, 3, (n, n), generator=g).double()  # many ties
        col = linear_assignment(cost)
        assert sorted(col.tolist()) == list(range(n))
        best = min(_cost(torch.tensor(p), cost) for p in itertools.permutations(range(n)))
        assert _cost(col, cost) == best


def _centres_with_unseen(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, 8, generator=g, dtype=torch.float64)
    centres[torch.rand(n, generator=g) < 0.5] = 0.0  # classes not seen yet: centre 0
    targets = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    return centres, targets


@pytest.mark.parametrize("n", [5, 17, 60, 300])
def test_ties_of_unseen_classes_follow_the_rule_and_equal_the_old_solver(n: int) -> None:
    """Zero centres tie; the unseen classes get their targets in increasing order.

    The old solver's answer brought to the same rule is scipy's answer, element for element.
    """
    for seed in range(3):
        centres, targets = _centres_with_unseen(n, seed)
        cost = -(F.normalize(centres, dim=1) @ targets.t())
        new = assign_targets(centres, targets)
        old = canonical_ties(cost.numpy(), hungarian(cost).numpy())
        assert new.tolist() == old.tolist()
        unseen = (centres == 0).all(dim=1)
        assert new[unseen].tolist() == sorted(new[unseen].tolist())
        assert _cost(new, cost) == pytest.approx(_cost(hungarian(cost), cost), abs=1e-12)


def test_all_centres_zero_is_the_identity() -> None:
    targets = F.normalize(torch.randn(50, 4, dtype=torch.float64), dim=1)
    assert torch.equal(assign_targets(torch.zeros(50, 4), targets), torch.arange(50))


def test_canonical_ties_sorts_only_within_identical_rows() -> None:
    cost = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert canonical_ties(cost, np.array([0, 2, 1])).tolist() == [0, 1, 2]
    assert canonical_ties(cost, np.array([1, 2, 0])).tolist() == [1, 0, 2]


def test_bad_cost_matrices_are_refused() -> None:
    with pytest.raises(BalfeatError, match="NaN or inf"):
        linear_assignment(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(BalfeatError, match="square"):
        linear_assignment(torch.zeros(2, 3))
