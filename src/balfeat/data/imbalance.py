"""Datasets of controlled imbalance: the paper's LTα family, balanced splits, CIFAR-LT counts.

Every generator is seeded (a ``numpy.random.Generator`` made from ``seed``), deterministic, and
returns split entries sorted by (label, path), ready for :func:`balfeat.data.splits.write_split`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from balfeat.data.splits import SplitEntry
from balfeat.errors import DataError


def image_key(path: str) -> str:
    """The class folder and file name, so ``/n01/x.JPEG`` and ``train/n01/x.JPEG`` compare equal."""
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[-2:])


def group_by_label(entries: Iterable[SplitEntry]) -> dict[int, list[SplitEntry]]:
    """Entries per label, each list in file order; labels in increasing order."""
    groups: dict[int, list[SplitEntry]] = {}
    for e in entries:
        groups.setdefault(e.label, []).append(e)
    return dict(sorted(groups.items()))


def _sorted(entries: Iterable[SplitEntry]) -> list[SplitEntry]:
    return sorted(entries, key=lambda e: (e.label, e.path))


def power_counts(counts: Sequence[int] | np.ndarray, alpha: float) -> np.ndarray:
    """The paper's power-smoothed counts ``n_c(α) = round(n_c^α · mean(n) / mean(n^α))``.

    The total stays (up to rounding) that of ``counts``; ``α=1`` gives ``counts`` back and
    ``α=0`` a balanced set. Rounding is half away from zero.

    Shape: (C,) -> (C,) int64.
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or len(n) == 0 or not bool(np.all(np.isfinite(n) & (n > 0))):
        raise DataError("power_counts needs a non-empty 1-D array of positive class counts")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise DataError(
            f"power_counts: alpha={alpha} must be a finite number >= 0 (1 keeps the counts, "
            "0 balances them; the paper uses 0.8, 0.6, 0.4, 0.2)"
        )
    scaled = n**alpha * (n.mean() / (n**alpha).mean())
    return np.floor(scaled + 0.5).astype(np.int64)


def _choose(rng: np.random.Generator, items: list[SplitEntry], k: int) -> list[SplitEntry]:
    if k >= len(items):
        return list(items)
    idx = rng.choice(len(items), size=k, replace=False)
    return [items[i] for i in sorted(idx)]


def imbalance_family(
    long_tailed: Sequence[SplitEntry],
    pool: Sequence[SplitEntry],
    alphas: Sequence[float] = (0.8, 0.6, 0.4, 0.2),
    balanced: Sequence[SplitEntry] | None = None,
    exclude: Iterable[SplitEntry] = (),
    seed: int = 0,
) -> dict[float, list[SplitEntry]]:
    """Nested splits LTα whose class counts are the long-tailed counts smoothed by ``α``.

    Class ``c`` of LTα gets exactly ``n_c(α)`` images (:func:`power_counts` of the long-tailed
    counts). The sets are drawn in order of decreasing ``α``, each from the previous, more skewed
    set: where that set holds at least ``n_c(α)`` images of ``c``, LTα's images are a random subset
    of them. Otherwise they are a random subset of the balanced set's images of ``c`` when that
    holds enough, else all of those topped up with images of the previous set, then of ``pool``.
    Without a balanced set, LTα keeps all of the previous set's images and tops up from ``pool``.
    This is the nesting found in the reference files (LT6/LT4/LT2 are subsets of the previous set
    where it is large enough and nested with LT0 elsewhere). Images in ``exclude`` (val/test) are
    never used.

    Args:
        long_tailed: the most skewed set (ImageNet-LT train, α = 1).
        pool: every image that may be used (the full train folder listing), labelled.
        alphas: exponents in (0, 1); drawn largest first.
        balanced: an optional balanced set (LT0) preferred for top-ups.
        exclude: held-out entries; compared by class folder and file name.
        seed: seed of the numpy generator.

    Returns:
        ``{alpha: entries}`` sorted by (label, path). Each entry keeps the path as written in the
        set it was drawn from, so give all sets in one path style (e.g. ``/n01440764/x.JPEG``).

    Raises:
        DataError: a class of the pool has too few unused images for its count.
    """
    excluded = {image_key(e.path) for e in exclude}
    lt_groups = group_by_label(long_tailed)
    labels = list(lt_groups)
    counts = np.array([len(lt_groups[c]) for c in labels])
    pool_groups = group_by_label(e for e in pool if image_key(e.path) not in excluded)
    bal_groups = group_by_label(balanced or ())
    rng = np.random.default_rng(seed)
    family: dict[float, list[SplitEntry]] = {}
    prev = {c: [e for e in g if image_key(e.path) not in excluded] for c, g in lt_groups.items()}
    for alpha in sorted(alphas, reverse=True):
        targets = power_counts(counts, alpha)
        current: dict[int, list[SplitEntry]] = {}
        for c, target in zip(labels, targets.tolist(), strict=True):
            have = prev.get(c, [])
            if len(have) >= target:
                current[c] = _choose(rng, have, target)
                continue
            bal = [e for e in bal_groups.get(c, []) if image_key(e.path) not in excluded]
            if bal and len(bal) >= target:
                current[c] = _choose(rng, bal, target)
                continue
            # Keep the whole base set (balanced if given, else the previous set), then top up.
            chosen = list(bal) if bal else list(have)
            used = {image_key(e.path) for e in chosen}
            for source in (have, pool_groups.get(c, [])):
                if len(chosen) >= target:
                    break
                fresh = [e for e in source if image_key(e.path) not in used]
                extra = _choose(rng, fresh, target - len(chosen))
                chosen.extend(extra)
                used.update(image_key(e.path) for e in extra)
            if len(chosen) < target:
                raise DataError(
                    f"class {c}: LT(alpha={alpha}) needs {target} images but the pool holds only "
                    f"{len(chosen)} usable ones (after removing held-out images); give a larger "
                    "pool or fewer classes"
                )
            current[c] = chosen
        family[alpha] = _sorted(e for g in current.values() for e in g)
        prev = current
    return family


def balanced_split(
    pool: Sequence[SplitEntry],
    total: int | None = None,
    per_class: int | None = None,
    exclude: Iterable[SplitEntry] = (),
    seed: int = 0,
) -> list[SplitEntry]:
    """A balanced split (the paper's LT0, "ImageNet-100k"): ``⌊total/C⌋`` random images per class.

    Give exactly one of ``total`` or ``per_class``.

    Raises:
        DataError: a class holds fewer than ``per_class`` usable images.
    """
    if (total is None) == (per_class is None):
        raise DataError("balanced_split: give exactly one of total= or per_class=")
    excluded = {image_key(e.path) for e in exclude}
    groups = group_by_label(e for e in pool if image_key(e.path) not in excluded)
    if not groups:
        raise DataError("balanced_split: the pool is empty")
    k = per_class if per_class is not None else int(total or 0) // len(groups)
    rng = np.random.default_rng(seed)
    out: list[SplitEntry] = []
    for c, g in groups.items():
        if len(g) < k:
            raise DataError(
                f"balanced_split: class {c} has {len(g)} usable images, {k} needed; lower the total"
            )
        out.extend(_choose(rng, g, k))
    return _sorted(out)


def _check_profile_sizes(where: str, num_classes: int, n_max: int) -> None:
    """``num_classes`` and ``n_max`` are whole numbers >= 1 (``10.5`` images is refused)."""
    for name, value in (("num_classes", num_classes), ("n_max", n_max)):
        whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not whole or value < 1:
            raise DataError(
                f"{where} needs num_classes >= 1, n_max >= 1 and ratio >= 1 (whole numbers of "
                f"classes and images): {name}={value!r}"
            )


def exponential_counts(num_classes: int, n_max: int, ratio: float) -> list[int]:
    """CIFAR-LT counts ``n_i = ⌊n_max · ratio^(−i/(C−1))⌋`` (Cao et al. 2019, LDAM-DRW code).

    ``ratio`` is the imbalance ratio n_max / n_min (e.g. 100 for CIFAR-10-LT-100).
    """
    _check_profile_sizes("exponential_counts", num_classes, n_max)
    if not (ratio >= 1 and math.isfinite(ratio)):
        raise DataError(
            f"exponential_counts needs num_classes >= 1, n_max >= 1 and a finite ratio >= 1, "
            f"got num_classes={num_classes}, n_max={n_max}, ratio={ratio}"
        )
    if num_classes == 1:
        return [n_max]
    return [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def pareto_counts(
    num_classes: int, n_max: int, shape: float | None = None, ratio: float | None = None
) -> list[int]:
    """Power-law (Zipf/Pareto) counts ``n_i = ⌊n_max · (i+1)^(−shape)⌋``, at least 1.

    Give ``shape`` directly, or ``ratio`` (n_max / n_min) from which
    ``shape = ln(ratio) / ln(C)``. Heavier heads and longer flat tails than
    :func:`exponential_counts` at the same ratio.
    """
    if (shape is None) == (ratio is None):
        raise DataError("pareto_counts: give exactly one of shape= or ratio=")
    _check_profile_sizes("pareto_counts", num_classes, n_max)
    if shape is None:
        if ratio is None or not (ratio >= 1 and math.isfinite(ratio)):
            raise DataError(f"pareto_counts: ratio must be a finite number >= 1, got {ratio}")
        shape = math.log(ratio) / math.log(num_classes) if num_classes > 1 else 0.0
    if not (shape >= 0 and math.isfinite(shape)):
        raise DataError(
            f"pareto_counts: shape={shape} must be a finite number >= 0 (0 is balanced; a "
            "negative shape would grow the counts past n_max)"
        )
    return [max(1, int(n_max * (i + 1) ** (-shape) + 1e-9)) for i in range(num_classes)]


def long_tail_from_balanced(
    pool: Sequence[SplitEntry],
    counts: Sequence[int],
    seed: int = 0,
    keep_class_order: bool = False,
) -> list[SplitEntry]:
    """Subsample a (balanced) pool to the given per-class counts.

    Args:
        pool: labelled entries; its classes in increasing label order receive ``counts``.
        counts: images per class, one per class of the pool.
        seed: seeds which images are kept and, unless ``keep_class_order``, which class gets
            which count (a random permutation).
        keep_class_order: give ``counts[i]`` to the i-th class (the CIFAR-LT convention).

    Raises:
        DataError: the number of counts differs from the number of classes, or a class is too
            small for its count.
    """
    groups = group_by_label(pool)
    labels = list(groups)
    if len(counts) != len(labels):
        raise DataError(
            f"long_tail_from_balanced: {len(counts)} counts for {len(labels)} classes in the pool"
        )
    rng = np.random.default_rng(seed)
    order = np.arange(len(labels)) if keep_class_order else rng.permutation(len(labels))
    out: list[SplitEntry] = []
    for c, j in zip(labels, order.tolist(), strict=True):
        k = int(counts[j])
        if len(groups[c]) < k:
            raise DataError(
                f"long_tail_from_balanced: class {c} has {len(groups[c])} images, {k} needed"
            )
        out.extend(_choose(rng, groups[c], k))
    return _sorted(out)


def class_splits(class_names: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """Two halves of the classes and their complements, like ``imagenet_clsset*.txt``.

    Returns:
        ``{"clsset1": first half of the sorted names, "clsset1_comp": the rest,
        "clsset2": a seeded random half, "clsset2_comp": the rest}``, each sorted.
    """
    names = sorted(set(class_names))
    if len(names) != len(class_names):
        raise DataError("class_splits: class names must be unique")
    half = len(names) // 2
    rng = np.random.default_rng(seed)
    pick = set(rng.choice(len(names), size=half, replace=False).tolist())
    return {
        "clsset1": names[:half],
        "clsset1_comp": names[half:],
        "clsset2": [n for i, n in enumerate(names) if i in pick],
        "clsset2_comp": [n for i, n in enumerate(names) if i not in pick],
    }


def exponential_profile(num_classes: int, n_max: int, imbalance_ratio: float) -> list[int]:
    """Strict :func:`exponential_counts`: every class must keep at least one image.

    The one rounding rule is floor, ``n_i = ⌊n_max · ratio^(−i/(C−1))⌋``, which reproduces the
    standard CIFAR-LT counts (CIFAR-10-LT, ratio 100: 5000, 2997, ..., 50; 12,406 images).

    Raises:
        DataError: the request leaves a class empty; the message names the largest ratio that
            ``n_max`` images per class can give (``n_max``: tail of one image).
    """
    counts = exponential_counts(num_classes, n_max, imbalance_ratio)
    if min(counts) < 1:
        raise DataError(
            f"data.imbalance_ratio={imbalance_ratio:g} on {n_max} images per class leaves the "
            f"tail class(es) with no image; the largest possible ratio is {n_max} "
            "(a tail of one image): lower data.imbalance_ratio or use more images per class"
        )
    return counts


def achieved_ratio(counts: Sequence[int] | np.ndarray) -> float:
    """The real imbalance ratio ``max(n) / min(n)`` of per-class counts (report this one)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.size == 0 or int(c.min()) < 1:
        raise DataError(f"achieved_ratio: counts must all be >= 1, got {c.tolist()}")
    return float(c.max()) / float(c.min())


def family_counts(num_classes: int, total: int, ratio: float, seed: int = 0) -> list[int]:
    """Per-class counts of one set of an imbalance family of ``total`` images.

    ``ratio == 1`` gives ``total // C`` per class; otherwise :func:`exponential_counts` (the one
    profile and its floor rounding) with the largest ``n_max`` whose counts sum to at most
    ``total``, the remainder added to the head classes one image each. Counts are assigned to
    classes by a seeded permutation (the same for every ratio).

    Returns:
        ``counts[c]`` for class ``c``; sums to ``total`` (up to ``C - 1`` fewer when balanced).
    """
    if ratio <= 1.0:
        profile = [total // num_classes] * num_classes
    else:
        lo, hi = 1, total
        while lo < hi:  # largest n_max with sum(counts) <= total
            mid = (lo + hi + 1) // 2
            if sum(exponential_counts(num_classes, mid, ratio)) <= total:
                lo = mid
            else:
                hi = mid - 1
        profile = exponential_counts(num_classes, lo, ratio)
        rest = total - sum(profile)
        for i in range(min(rest, num_classes)):
            profile[i] += 1
        profile = [max(1, c) for c in profile]
    order = np.random.default_rng(seed).permutation(num_classes)
    counts = [0] * num_classes
    for rank, cls in enumerate(order.tolist()):
        counts[cls] = profile[rank]
    return counts


def check_family(
    sets: Mapping[str, float],
    total: int,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    seed: int = 0,
    probe_per_class: int = 0,
) -> None:
    """Refuse, before any training, a family (``{set name: ratio}`` of ``total`` images each,
    :func:`family_counts`) that leaves a class or a whole set without images, whose whole-image
    counts cannot reach the imbalance ratio asked for (more than 2x off), or that asks for more
    images of a class than the training pool ``labels`` holds (``probe_per_class`` included).

    Raises:
        DataError: naming the set, the class and what to change (the study's keys
            ``family.total``, ``family.sets.NAME``, ``probe_per_class``).
    """
    num_classes = len(class_names)
    pool = np.bincount(labels, minlength=num_classes)
    for name, ratio in sets.items():
        counts = family_counts(num_classes, total, ratio, seed=seed)
        empty = [c for c, n in enumerate(counts) if n < 1]
        if empty:
            raise DataError(
                f"family.total={total} leaves {len(empty)} class(es) of set {name!r} "
                f"without images (e.g. class {empty[0]} {class_names[empty[0]]!r}); a set "
                f"needs at least {num_classes} images (one per class) — raise family.total"
            )
        real = max(counts) / max(min(counts), 1)
        if ratio > 1 and not 0.5 <= real / ratio <= 2.0:  # rounding to whole images aside
            raise DataError(
                f"family.sets.{name} asks for imbalance ratio {ratio:g}, but "
                f"family.total={total} images over {num_classes} classes give "
                f"{real:.4g} (the tail classes cannot go below 1 image); lower the ratio or "
                "raise family.total"
            )
        short = [c for c, n in enumerate(counts) if n > pool[c]]
        if short:
            c = short[0]
            raise DataError(
                f"set {name!r} needs {counts[c]} images of class {c} "
                f"({class_names[c]!r}) but the training pool holds {pool[c]}; lower "
                "family.total"
            )
    short = [c for c in range(num_classes) if pool[c] < probe_per_class]
    if short:
        raise DataError(
            f"probe_per_class={probe_per_class} but class {short[0]} has only "
            f"{pool[short[0]]} training images; lower probe_per_class"
        )
