from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balfeat.data.imbalance import (
    balanced_split,
    class_splits,
    exponential_counts,
    group_by_label,
    image_key,
    imbalance_family,
    long_tail_from_balanced,
    pareto_counts,
    power_counts,
)
from balfeat.data.splits import SplitEntry, read_class_set, read_split
from balfeat.errors import DataError


def _pool(per_class: list[int], prefix: str = "/") -> list[SplitEntry]:
    return [
        SplitEntry(f"{prefix}n{c:03d}/n{c:03d}_{i}.JPEG", c)
        for c, n in enumerate(per_class)
        for i in range(n)
    ]


def _long_tailed(counts: list[int]) -> list[SplitEntry]:
    return _pool(counts)


def _counts(entries: list[SplitEntry], num_classes: int) -> list[int]:
    return np.bincount([e.label for e in entries], minlength=num_classes).tolist()


def _keys(entries: list[SplitEntry], label: int) -> set[str]:
    return {image_key(e.path) for e in entries if e.label == label}


def test_power_counts_formula() -> None:
    n = np.array([100, 40, 10, 2])
    for alpha in (1.0, 0.6, 0.0):
        expected = np.floor(n**alpha * n.mean() / (n**alpha).mean() + 0.5)
        assert power_counts(n, alpha).tolist() == expected.astype(int).tolist()
    assert power_counts(n, 1.0).tolist() == n.tolist()
    assert power_counts(n, 0.0).tolist() == [38] * 4  # round(152 / 4)
    with pytest.raises(DataError):
        power_counts([3, 0], 0.5)


def test_family_counts_nesting_and_held_out() -> None:
    lt_counts = [120, 60, 30, 12, 5, 2]
    pool = _pool([200] * 6, prefix="/")
    lt = pool[:0] + [e for e in pool if int(e.path.split("_")[1][:-5]) < lt_counts[e.label]]
    held = [
        SplitEntry(f"train/n{c:03d}/n{c:03d}_{i}.JPEG", c) for c in range(6) for i in (150, 151)
    ]
    fam = imbalance_family(lt, pool, alphas=(0.4, 0.8), exclude=held, seed=0)
    assert list(fam) == [0.8, 0.4]
    prev = lt
    for alpha, entries in fam.items():
        assert _counts(entries, 6) == power_counts(lt_counts, alpha).tolist()
        assert entries == sorted(entries, key=lambda e: (e.label, e.path))
        assert not {image_key(e.path) for e in entries} & {image_key(e.path) for e in held}
        for c in range(6):
            now, before = _keys(entries, c), _keys(prev, c)
            assert now <= before or before <= now  # nested either way
        prev = entries
    again = imbalance_family(lt, pool, alphas=(0.8, 0.4), exclude=held, seed=0)
    assert again == fam
    assert imbalance_family(lt, pool, alphas=(0.8, 0.4), seed=1) != fam


def test_family_prefers_balanced_set_for_top_ups() -> None:
    lt_counts = [100, 4]
    pool = _pool([150, 150])
    lt = [e for e in pool if int(e.path.split("_")[1][:-5]) < lt_counts[e.label]]
    bal = balanced_split(pool, per_class=40, seed=3)
    fam = imbalance_family(lt, pool, alphas=(0.5,), balanced=bal, seed=0)[0.5]
    target = power_counts(lt_counts, 0.5).tolist()
    assert _counts(fam, 2) == target
    assert _keys(fam, 0) <= _keys(lt, 0)  # enough in the previous set
    assert target[1] <= 40 and _keys(fam, 1) <= _keys(bal, 1)  # else drawn from the balanced set


def test_family_pool_too_small() -> None:
    pool = _pool([50, 3])
    lt = [e for e in pool if e.label == 0 or e.path.endswith("_0.JPEG")]
    with pytest.raises(DataError, match="class 1"):
        imbalance_family(lt, pool, alphas=(0.0,))


def test_balanced_split() -> None:
    pool = _pool([30, 12, 20])
    out = balanced_split(pool, total=37, seed=1)
    assert _counts(out, 3) == [12, 12, 12]
    assert balanced_split(pool, total=37, seed=1) == out
    held = pool[:25]
    assert _counts(balanced_split(pool, per_class=5, exclude=held), 3) == [5, 5, 5]
    with pytest.raises(DataError, match="class 1 has 12"):
        balanced_split(pool, per_class=13)
    with pytest.raises(DataError, match="exactly one"):
        balanced_split(pool)


def test_exponential_and_pareto_counts() -> None:
    assert exponential_counts(10, 5000, 100) == [int(5000 * 0.01 ** (i / 9)) for i in range(10)]
    c = exponential_counts(10, 5000, 100)
    assert c[0] == 5000 and c[-1] == 50 and c == sorted(c, reverse=True)
    assert exponential_counts(1, 7, 10) == [7]
    p = pareto_counts(10, 1000, ratio=10)
    assert p[0] == 1000 and p[-1] == 100 and p == sorted(p, reverse=True)
    assert pareto_counts(3, 100, shape=1.0) == [100, 50, 33]


def test_long_tail_from_balanced() -> None:
    pool = _pool([10, 10, 10, 10])
    counts = [10, 5, 2, 1]
    kept = long_tail_from_balanced(pool, counts, seed=0, keep_class_order=True)
    assert _counts(kept, 4) == counts
    shuffled = [sorted(_counts(long_tail_from_balanced(pool, counts, seed=s), 4)) for s in range(5)]
    assert all(s == sorted(counts) for s in shuffled)
    orders = {tuple(_counts(long_tail_from_balanced(pool, counts, seed=s), 4)) for s in range(8)}
    assert len(orders) > 1
    with pytest.raises(DataError, match="3 counts for 4 classes"):
        long_tail_from_balanced(pool, [1, 2, 3])


def test_class_splits() -> None:
    names = [f"n{i:03d}" for i in range(10)][::-1]
    s = class_splits(names, seed=0)
    assert s["clsset1"] == [f"n{i:03d}" for i in range(5)]
    assert sorted(s["clsset2"] + s["clsset2_comp"]) == sorted(names)
    assert len(s["clsset2"]) == 5 and s["clsset2"] == sorted(s["clsset2"])
    assert class_splits(names, seed=0) == s


def test_reference_class_sets(reference_splits: Path) -> None:
    full = read_class_set(reference_splits / "imagenet_clsfull.txt")
    ours = class_splits(full, seed=0)
    assert ours["clsset1"] == read_class_set(reference_splits / "imagenet_clsset1.txt")
    assert ours["clsset1_comp"] == read_class_set(reference_splits / "imagenet_clsset1_comp.txt")
    ref2 = read_class_set(reference_splits / "imagenet_clsset2.txt")
    assert len(ref2) == 500 and ref2 == sorted(ref2)


@pytest.mark.slow
def test_reference_family_nesting(reference_splits: Path) -> None:
    """LT6/LT4/LT2 are subsets of the previous set wherever it holds enough images of a class,
    and otherwise nested with LT0 (the rule imbalance_family follows); counts follow the power
    law of LT8's counts within 1 image."""
    names = ["imagenet_lt8_train", "imagenet_lt6_train", "imagenet_lt4_train", "imagenet_lt2_train"]
    sets = [group_by_label(read_split(reference_splits / f"{n}.txt")) for n in names]
    lt0 = group_by_label(read_split(reference_splits / "imagenet_100k_train.txt"))
    keys = [{c: {e.path for e in g} for c, g in s.items()} for s in sets]
    base = {c: {e.path for e in g} for c, g in lt0.items()}
    for prev, cur in itertools.pairwise(keys):
        for c in cur:
            if len(prev[c]) >= len(cur[c]):
                assert cur[c] <= prev[c]
            else:
                assert cur[c] <= base[c] or base[c] <= cur[c]
    n8 = np.array([len(keys[0][c]) for c in sorted(keys[0])])
    for alpha, k in zip((0.6, 0.4, 0.2), keys[1:], strict=True):
        n = np.array([len(k[c]) for c in sorted(k)])
        assert np.abs(power_counts(n8, alpha / 0.8) - n).max() <= 1


@given(
    counts=st.lists(st.integers(1, 60), min_size=2, max_size=8),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_family_properties(counts: list[int], seed: int) -> None:
    pool = _pool([200] * len(counts))
    lt = [e for e in pool if int(e.path.split("_")[1][:-5]) < counts[e.label]]
    alphas = (0.8, 0.6, 0.4, 0.2)
    fam = imbalance_family(lt, pool, alphas=alphas, seed=seed)
    highs, lows = [], []
    prev = lt
    for alpha in alphas:
        got = _counts(fam[alpha], len(counts))
        assert got == power_counts(counts, alpha).tolist()  # exact counts
        assert abs(sum(got) - sum(counts)) <= len(counts)  # total kept up to rounding
        for c in range(len(counts)):
            a, b = _keys(fam[alpha], c), _keys(prev, c)
            assert a <= b or b <= a
        highs.append(max(got))
        lows.append(min(got))
        prev = fam[alpha]
    assert highs == sorted(highs, reverse=True) and lows == sorted(lows)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: exponential_counts(3, 10, float("nan")), "finite ratio >= 1.*ratio=nan"),
        (lambda: exponential_counts(3, 10, float("inf")), "ratio=inf"),
        (lambda: exponential_counts(3, 10.5, 2.0), "n_max=10.5"),  # type: ignore[arg-type]
        (lambda: exponential_counts(0, 10, 2.0), "num_classes=0"),
        (lambda: pareto_counts(3, 10, ratio=float("nan")), "ratio must be a finite"),
        (lambda: pareto_counts(3, 10, shape=-1.0), "shape=-1.0 must be"),
        (lambda: power_counts([10, 5], float("nan")), "alpha=nan"),
        (lambda: power_counts([10, 5], -1.0), "alpha=-1.0"),
        (lambda: power_counts([10, float("inf")], 0.5), "positive class counts"),
    ],
)
def test_bad_profile_arguments_are_named(call: object, match: str) -> None:
    """Before: NaN ended in 'cannot convert float NaN to integer' (or int64 minimum counts for
    power_counts), a negative Pareto shape grew counts past n_max, negative alpha swapped head
    and tail, ratio=inf emptied every class but the first, 10.5 images were accepted."""
    with pytest.raises(DataError, match=match):
        call()  # type: ignore[operator]


def test_family_counts_sum_to_the_total_on_one_profile() -> None:
    from balfeat.data.imbalance import exponential_counts, family_counts

    for ratio in (1.0, 10.0, 100.0):
        counts = family_counts(10, 4000, ratio, seed=3)
        assert sum(counts) == 4000
        if ratio > 1:  # the profile is exponential_counts' (floor) plus the remainder at the head
            profile = sorted(counts, reverse=True)
            assert any(  # n_max is the head's count, or one less when the head got an extra image
                all(
                    0 <= p - b <= 1
                    for p, b in zip(profile, exponential_counts(10, n, ratio), strict=True)
                )
                for n in (profile[0] - 1, profile[0])
            )
    assert family_counts(10, 4000, 10.0, seed=3) != family_counts(10, 4000, 10.0, seed=4)
    assert sorted(family_counts(10, 4000, 10.0, seed=3)) == sorted(family_counts(10, 4000, 10.0))


def test_check_family_refuses_a_class_short_of_images() -> None:
    from balfeat.data.imbalance import check_family

    labels = np.repeat(np.arange(4), [100, 100, 100, 5])
    names = ["a", "b", "c", "d"]
    check_family({"bal": 1.0}, 20, labels, names)
    with pytest.raises(DataError, match=r"set 'bal' needs 25 images of class 3 \('d'\)"):
        check_family({"bal": 1.0}, 100, labels, names)
    with pytest.raises(DataError, match="probe_per_class=6 but class 3 has only 5"):
        check_family({"bal": 1.0}, 20, labels, names, probe_per_class=6)
    with pytest.raises(DataError, match="leaves 4 class"):
        check_family({"bal": 1.0}, 3, labels, names)
