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


# --- power of the paired comparison: minimum detectable effect, seeds for ±1 point ----------------


def test_paired_t_power_matches_a_simulated_paired_t_test() -> None:
    from balfeat.evaluation.statistics import paired_t_power, t_quantile

    rng = np.random.default_rng(0)
    n, effect, sd, sims = 5, 1.5, 1.0, 200_000
    d = rng.normal(effect, sd, size=(sims, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    simulated = float((np.abs(t) > t_quantile(0.975, n - 1)).mean())
    assert paired_t_power(effect, sd, n) == pytest.approx(simulated, abs=0.005)


def test_paired_t_power_matches_scipy_noncentral_t() -> None:
    stats = pytest.importorskip("scipy.stats")
    from balfeat.evaluation.statistics import paired_t_power

    for n in (2, 3, 5, 12):
        for effect in (0.3, 0.8, 1.5):
            crit = stats.t.ppf(0.975, n - 1)
            lam = effect * np.sqrt(n) / 0.7
            ref = stats.nct.sf(crit, n - 1, lam) + stats.nct.cdf(-crit, n - 1, lam)
            assert paired_t_power(effect, 0.7, n) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize(("dz", "n_needed"), [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_for_80_percent_power_match_the_textbook_table(dz: float, n_needed: int) -> None:
    """Paired t-test, two-sided alpha 0.05, power 0.80: the sample sizes of Cohen's table
    (Statistical Power Analysis, 1988; G*Power gives the same): d_z 0.5 -> 34, 0.8 -> 15,
    1.0 -> 10."""
    from balfeat.evaluation.statistics import minimum_detectable_effect, paired_t_power

    assert paired_t_power(dz, 1.0, n_needed) >= 0.8 > paired_t_power(dz, 1.0, n_needed - 1)
    assert (
        minimum_detectable_effect(1.0, n_needed)
        <= dz
        < minimum_detectable_effect(1.0, n_needed - 1)
    )


def test_minimum_detectable_effect_has_80_percent_power_and_the_closed_form_limit() -> None:
    from balfeat.evaluation.statistics import (
        minimum_detectable_effect,
        paired_t_power,
        t_quantile,
    )

    for n, sd in ((3, 1.2), (8, 0.5)):
        mde = minimum_detectable_effect(sd, n)
        assert paired_t_power(mde, sd, n) == pytest.approx(0.8, abs=1e-6)
        approx = (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / np.sqrt(n)
        assert mde == pytest.approx(approx, rel=0.06)  # the textbook approximation
    # many seeds: the normal-theory value (z_0.975 + z_0.80) sd / sqrt(n) = 2.8016 sd / sqrt(n)
    assert minimum_detectable_effect(1.0, 400) == pytest.approx(2.8016 / 20, rel=5e-3)
    with pytest.raises(BalfeatError):
        minimum_detectable_effect(1.0, 1)


def test_seeds_for_half_width_is_the_least_n_with_a_narrow_enough_interval() -> None:
    from balfeat.evaluation.statistics import seeds_for_half_width, t_quantile

    def half(sd: float, n: int) -> float:
        return t_quantile(0.975, n - 1) * sd / np.sqrt(n)

    for sd in (0.3, 1.0, 1.5, 3.0):
        n = seeds_for_half_width(sd, 1.0)
        assert half(sd, n) <= 1.0
        assert n == 2 or half(sd, n - 1) > 1.0
    assert seeds_for_half_width(1.5) == 12  # t(0.975, 11) * 1.5 / sqrt(12) = 0.953
