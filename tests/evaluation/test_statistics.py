"""Intervals against textbook values, pairing by seed, the sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from balfeat.errors import BalfeatError
from balfeat.evaluation.statistics import (
    betainc,
    bootstrap_interval,
    describe_change,
    difference_of_changes,
    paired_differences,
    t_cdf,
    t_interval,
    t_quantile,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (120, 1.980)],
)
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_symmetry_and_cdf_inverse() -> None:
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5))
    assert t_cdf(t_quantile(0.9, 7), 7) == pytest.approx(0.9, abs=1e-9)
    # df = 1 is Cauchy: F(t) = 1/2 + atan(t)/pi.
    assert t_cdf(1.7, 1) == pytest.approx(0.5 + math.atan(1.7) / math.pi, abs=1e-10)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)


def test_t_interval_textbook_case() -> None:
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.std == pytest.approx(1.0) and iv.n == 3
    half = 4.302653 / math.sqrt(3)
    assert iv.low == pytest.approx(2.0 - half, abs=1e-5)
    assert iv.high == pytest.approx(2.0 + half, abs=1e-5)
    assert not iv.excludes_zero()
    one = t_interval([5.0])
    assert one.low is None and one.method == "none"
    with pytest.raises(BalfeatError):
        t_interval([])
    with pytest.raises(BalfeatError):
        t_interval([1.0, float("nan")])


def test_bootstrap_interval_known_case() -> None:
    # 70 of 100 correct: the bootstrap distribution of the mean is ~N(70, sqrt(.21/100)*100=4.58).
    correct = np.array([1] * 70 + [0] * 30, dtype=bool)
    iv = bootstrap_interval(correct, resamples=4000, seed=1)
    assert iv.mean == pytest.approx(70.0)
    assert iv.method == "bootstrap over test images"
    assert iv.low == pytest.approx(70 - 1.96 * 4.58, abs=1.0)
    assert iv.high == pytest.approx(70 + 1.96 * 4.58, abs=1.0)
    # All correct: nothing varies.
    allc = bootstrap_interval(np.ones(10, dtype=bool))
    assert allc.low == allc.high == 100.0


def test_pairing_uses_common_seeds_only() -> None:
    a = {0: 70.0, 1: 72.0, 2: 71.0, 3: 99.0}
    b = {0: 69.0, 1: 70.0, 2: 70.0}
    iv = paired_differences(a, b)
    assert iv.n == 3 and iv.mean == pytest.approx((1 + 2 + 1) / 3)
    # Paired sd is the sd of the differences, not of each side.
    assert iv.std == pytest.approx(float(np.std([1, 2, 1], ddof=1)))
    with pytest.raises(BalfeatError, match="no common seed"):
        paired_differences({0: 1.0}, {1: 1.0})


def test_difference_of_changes_pairs_by_seed() -> None:
    sl_lt, sl_bal = {0: 60.0, 1: 61.0, 2: 59.0}, {0: 70.0, 1: 70.5, 2: 69.5}
    moco_lt, moco_bal = {0: 65.0, 1: 65.5, 2: 64.5}, {0: 66.0, 1: 66.0, 2: 65.0}
    iv = difference_of_changes(sl_lt, sl_bal, moco_lt, moco_bal)
    per_seed = [(60 - 70) - (65 - 66), (61 - 70.5) - (65.5 - 66), (59 - 69.5) - (64.5 - 65)]
    assert iv.mean == pytest.approx(float(np.mean(per_seed)))
    assert iv.excludes_zero() and iv.high < 0
    text = describe_change("SL change minus MoCo change", iv)
    assert "distinguishable from zero at 95%" in text and "lower" in text
    flat = t_interval([0.5, -0.5, 0.2])
    assert "not distinguishable" in describe_change("x", flat)
    assert "one seed" in describe_change("x", t_interval([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resamples": 0}, "resamples >= 1"),
        ({"level": 0.0}, r"level in \(0, 1\)"),
        ({"level": 1.0}, r"level in \(0, 1\)"),
    ],
)
def test_bootstrap_interval_refuses_bad_settings(kwargs: dict, match: str) -> None:
    """Before: resamples=0 ended in a numpy IndexError; level 0 or 1 gave a 0-width interval."""
    with pytest.raises(BalfeatError, match=match):
        bootstrap_interval([1, 0, 1], **kwargs)


def test_bootstrap_interval_refuses_nan() -> None:
    """Before: a NaN per-image value gave an interval of NaNs without a word."""
    with pytest.raises(BalfeatError, match="finite per-image values"):
        bootstrap_interval([1.0, 0.0, float("nan")])
