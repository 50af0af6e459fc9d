"""Intervals and paired differences for studies run over several seeds.

A study cell (method, pre-training set, probe) run with seeds ``s = 1..n`` gives accuracies
``x_s``. Its summary is the mean, the sample standard deviation and a 95% Student-t interval
``mean ± t_{0.975, n-1} · sd / sqrt(n)``. With a single seed no spread over seeds exists; the
interval is then a percentile bootstrap over test images (resampling which test images are scored),
labelled ``"bootstrap over test images"`` so nobody reads it as seed variation.

The paper's claim is a difference of differences: per method, the change from the balanced set
to a long-tailed set, ``d_s = x_s(LT) - x_s(balanced)``, paired by seed (same seed, same
initialisation and data order), and between methods ``d_s(A) - d_s(B)``. Pairing removes the
variation that the seed shares across sets; each difference gets the same t-interval.

Everything is plain Python/numpy (no SciPy): the Student-t quantile is computed by bisection on
its CDF, which is written with the regularised incomplete beta function (continued fraction,
Numerical Recipes §6.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from balfeat.errors import BalfeatError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise BalfeatError(f"t distribution needs df > 0, got {df}")
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. 0.975, 2 -> 4.303)."""
    if not 0.0 < p < 1.0:
        raise BalfeatError(f"quantile level must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:  # pragma: no cover - only for absurd p
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A mean with its spread and a confidence interval.

    Attributes:
        mean: mean over seeds (or the single value).
        std: sample standard deviation over seeds (``None`` with one seed).
        n: number of seeds.
        low, high: the interval's ends.
        level: confidence level (0.95).
        method: ``"t over seeds"``, ``"bootstrap over test images"`` or ``"none"`` (one value
            and nothing to resample).
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    level: float = 0.95
    method: str = "t over seeds"

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (``None`` without an interval)."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2.0

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly on one side of 0 (distinguishable from zero)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``half_width``)."""
        d = asdict(self)
        d["half_width"] = self.half_width
        return d

    def text(self, digits: int = 2) -> str:
        """``m ± h`` (or ``m`` alone), e.g. ``-1.20 ± 0.84``."""
        h = self.half_width
        if h is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {h:.{digits}f}"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean, sample sd and the Student-t interval of ``values`` (one value per seed).

    With a single value the interval is ``None`` (method ``"none"``); use
    :func:`bootstrap_interval` over test images for a one-seed interval.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise BalfeatError("an interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise BalfeatError(f"an interval needs finite values, got {x.tolist()}")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, 1, None, None, level, "none")
    sd = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, x.size - 1) * sd / math.sqrt(x.size)
    return Interval(mean, sd, int(x.size), mean - half, mean + half, level, "t over seeds")


def bootstrap_interval(
    correct: Sequence[bool] | np.ndarray,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    scale: float = 100.0,
) -> Interval:
    """Percentile bootstrap interval of an accuracy over test images (one seed).

    Args:
        correct: (N,) whether each test image was classified correctly.
        level: confidence level.
        resamples: bootstrap resamples.
        seed: seed of the resampling.
        scale: 100 for accuracy in percent.

    Returns:
        An :class:`Interval` with ``method="bootstrap over test images"`` and ``n=1``.
    """
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if c.size == 0:
        raise BalfeatError("a bootstrap interval needs at least one test image")
    if not bool(np.all(np.isfinite(c))):
        raise BalfeatError("a bootstrap interval needs finite per-image values, got NaN/inf")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise BalfeatError(
            f"a bootstrap interval needs a level in (0, 1) and resamples >= 1, got level={level}, "
            f"resamples={resamples}"
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.size, size=(resamples, c.size))
    stats = c[idx].mean(axis=1) * scale
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(
        float(c.mean() * scale),
        None,
        1,
        float(low),
        float(high),
        level,
        "bootstrap over test images",
    )


def paired_differences(
    a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95
) -> Interval:
    """Interval of ``a[s] - b[s]`` over the seeds ``s`` both have (paired by seed).

    Raises:
        BalfeatError: when the two share no seed.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise BalfeatError(
            f"no common seed to pair: {sorted(a)} vs {sorted(b)}; "
            "run both cells with the same seeds"
        )
    return t_interval([a[s] - b[s] for s in seeds], level)


def difference_of_changes(
    a_lt: Mapping[int, float],
    a_bal: Mapping[int, float],
    b_lt: Mapping[int, float],
    b_bal: Mapping[int, float],
    level: float = 0.95,
) -> Interval:
    """Interval of ``(a_lt - a_bal) - (b_lt - b_bal)`` per seed (the paper's comparison).

    Methods A and B are paired by seed too (seed ``s`` of A with seed ``s`` of B); only seeds that
    all four cells have are used.
    """
    seeds = sorted(set(a_lt) & set(a_bal) & set(b_lt) & set(b_bal))
    if not seeds:
        raise BalfeatError("no seed common to the four cells of a difference of changes")
    return t_interval([(a_lt[s] - a_bal[s]) - (b_lt[s] - b_bal[s]) for s in seeds], level)


def describe_change(name: str, iv: Interval, unit: str = "points") -> str:
    """One sentence on whether a change is distinguishable from zero at the interval's level."""
    pct = round(iv.level * 100)
    if iv.low is None or iv.high is None:
        return f"{name}: {iv.mean:+.2f} {unit} (one seed: no interval, cannot tell from noise)"
    rng = f"{iv.mean:+.2f} {unit}, {pct}% CI [{iv.low:+.2f}, {iv.high:+.2f}], n={iv.n}"
    if iv.excludes_zero():
        direction = "lower" if iv.high < 0 else "higher"
        return f"{name}: {rng} — {direction}, distinguishable from zero at {pct}%"
    return f"{name}: {rng} — not distinguishable from zero at {pct}%"


# --- power of the paired comparison -------------------------------------------------------------
#
# A paired comparison over n seeds tests the mean of the per-seed differences d_s with
# T = mean(d) / (sd(d) / sqrt(n)), Student's t with n - 1 degrees of freedom under "no effect".
# With a true effect delta, T is noncentral t with noncentrality lambda = delta * sqrt(n) / sd, and
# the two-sided 95% test detects it with probability
#     power(lambda) = P(|T| > t_{0.975, n-1}) = E_S[ Phi(lambda - c S) + Phi(-lambda - c S) ],
# where c = t_{0.975, n-1} and S = sqrt(V / (n-1)), V ~ chi^2_{n-1} (T = (Z + lambda) / S).
# The minimum detectable effect (MDE) is the delta whose power is 80%; the textbook closed form
# (t_{0.975, n-1} + t_{0.80, n-1}) * sd / sqrt(n) approximates it and is given beside it.

MDE_FORMULA = (
    "MDE = the effect a paired two-sided t-test at 95% detects with 80% power: the delta with "
    "P(|T'| > t(0.975, n-1)) = 0.80, T' noncentral t with n-1 df and noncentrality "
    "delta·sqrt(n)/sd (sd: spread of the per-seed differences); about "
    "(t(0.975, n-1) + t(0.80, n-1))·sd/sqrt(n)"
)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (erfc by the Chebyshev fit of Numerical Recipes §6.2,
    fractional error below 1.2e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))  # fmt: skip
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


def paired_t_power(effect: float, sd: float, n: int, level: float = 0.95) -> float:
    """Power of the two-sided paired t-test at ``level`` to detect a true mean difference
    ``effect`` when the per-seed differences have standard deviation ``sd`` over ``n`` seeds.

    Integrates the noncentral t over the distribution of the sample sd (Simpson's rule).
    """
    if n < 2 or not sd > 0:
        raise BalfeatError(f"power needs n >= 2 seeds and sd > 0, got n={n}, sd={sd}")
    df = n - 1
    crit = t_quantile(0.5 + level / 2.0, df)
    lam = abs(effect) * math.sqrt(n) / sd
    s_max = math.sqrt((df + 40.0 * math.sqrt(2.0 * df) + 60.0) / df)
    s = np.linspace(0.0, s_max, 4001)
    log_pdf = (
        (df / 2.0) * math.log(df)
        - (df / 2.0 - 1.0) * math.log(2.0)
        - math.lgamma(df / 2.0)
        + (df - 1) * np.log(np.maximum(s, 1e-300))
        - df * s * s / 2.0
    )
    pdf = np.exp(log_pdf)  # density of S = sqrt(chi2_df / df)
    inner = _normal_cdf(lam - crit * s) + _normal_cdf(-lam - crit * s)
    w = np.ones_like(s)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    h = s[1] - s[0]
    return float(min(1.0, (h / 3.0) * float((w * pdf * inner).sum())))


def minimum_detectable_effect(sd: float, n: int, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true paired difference detected with ``power`` by the two-sided test at
    ``level`` over ``n`` seeds whose differences spread with ``sd`` (see :data:`MDE_FORMULA`).

    Raises:
        BalfeatError: with fewer than 2 seeds or ``sd <= 0`` (no spread to size an effect by).
    """
    if not 0.0 < power < 1.0:
        raise BalfeatError(f"power must be in (0, 1), got {power}")
    if paired_t_power(0.0, sd, n, level) >= power:  # pragma: no cover - power <= 1 - level
        return 0.0
    lo, hi = 0.0, sd
    while paired_t_power(hi, sd, n, level) < power:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if paired_t_power(mid, sd, n, level) < power:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * sd:
            break
    return 0.5 * (lo + hi)


def seeds_for_half_width(sd: float, half_width: float = 1.0, level: float = 0.95) -> int:
    """Seeds a paired comparison needs for a ``level`` t-interval of at most ``± half_width``
    when its per-seed differences spread with ``sd``: the least n with
    ``t(0.5 + level/2, n-1) · sd / sqrt(n) <= half_width`` (at least 2)."""
    if not half_width > 0:
        raise BalfeatError(f"half_width must be > 0, got {half_width}")
    if not sd > 0:
        return 2
    n = max(2, math.ceil((1.96 * sd / half_width) ** 2) - 1)
    while t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n) > half_width:
        n += 1
    while n > 2 and t_quantile(0.5 + level / 2.0, n - 2) * sd / math.sqrt(n - 1) <= half_width:
        n -= 1
    return n


def sizing(iv: Interval) -> dict[str, Any]:
    """The minimum detectable effect and the seeds needed for ±1 point, from an interval of
    paired differences (``{}`` with fewer than 2 seeds or no spread)."""
    if iv.std is None or iv.n < 2 or not iv.std > 0:
        return {}
    return {
        "mde": minimum_detectable_effect(iv.std, iv.n, iv.level),
        "seeds_for_1pt": seeds_for_half_width(iv.std, 1.0, iv.level),
    }
