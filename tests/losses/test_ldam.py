"""LDAM loss (Cao et al. 2019) and class-balanced weights (Cui et al. 2019) on hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from balfeat.errors import BalfeatError
from balfeat.losses.ldam import class_balanced_weights, ldam_loss, ldam_margins


def test_margins_by_hand() -> None:
    # counts 16, 1: n^-1/4 = 0.5, 1 -> scaled so the rarest class has 0.5: 0.25, 0.5
    assert ldam_margins([16, 1], 0.5).tolist() == [0.25, 0.5]
    # counts 81, 16, 1: 1/3, 1/2, 1 -> x0.5
    got = ldam_margins([81, 16, 1], 0.5)
    assert got.tolist() == pytest.approx([1 / 6, 0.25, 0.5], abs=1e-15)


def test_loss_by_hand_two_classes() -> None:
    """One sample of class 1 (margin 0.5), logits (0.2, 0.4), s = 30:
    -log(exp(30 * (0.4 - 0.5)) / (exp(30 * 0.2) + exp(30 * (0.4 - 0.5))))."""
    logits = torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    margins = ldam_margins([16, 1], 0.5)
    got = ldam_loss(logits, torch.tensor([1]), margins, scale=30.0)
    a, b = 30 * 0.2, 30 * (0.4 - 0.5)
    want = -(b - math.log(math.exp(a) + math.exp(b)))
    assert float(got) == pytest.approx(want, abs=1e-12)
    # class 0 (margin 0.25): only the true class's logit moves
    got0 = ldam_loss(logits, torch.tensor([0]), margins, scale=30.0)
    a0, b0 = 30 * (0.2 - 0.25), 30 * 0.4
    assert float(got0) == pytest.approx(-(a0 - math.log(math.exp(a0) + math.exp(b0))), abs=1e-12)


def test_loss_against_a_loop_with_weights() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 3, 0, 2])
    counts = [100, 40, 9, 2]
    margins = ldam_margins(counts, 0.5)
    w = class_balanced_weights(counts, 0.9999)
    num = den = 0.0
    for i in range(7):
        z = [
            30.0 * (float(logits[i, j]) - (float(margins[j]) if j == y[i] else 0.0))
            for j in range(4)
        ]
        li = -(z[int(y[i])] - math.log(sum(math.exp(v) for v in z)))
        num += float(w[y[i]]) * li
        den += float(w[y[i]])
    assert float(ldam_loss(logits, y, margins, 30.0, w)) == pytest.approx(num / den, rel=1e-12)


def test_class_balanced_weights_by_hand() -> None:
    beta = 0.9
    counts = [3, 1]
    raw = [(1 - beta) / (1 - beta**3), (1 - beta) / (1 - beta)]
    want = [r / sum(raw) * 2 for r in raw]
    assert class_balanced_weights(counts, beta).tolist() == pytest.approx(want, abs=1e-15)
    assert class_balanced_weights(counts, 0.0).tolist() == [1.0, 1.0]


def test_bad_counts_and_beta_are_refused() -> None:
    with pytest.raises(BalfeatError, match="at least one training sample"):
        ldam_margins([3, 0])
    with pytest.raises(BalfeatError, match="beta"):
        class_balanced_weights([3, 1], 1.0)
