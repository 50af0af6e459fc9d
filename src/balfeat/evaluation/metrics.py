"""Accuracy metrics for long-tailed classification, on numpy arrays.

Many/medium/few-shot accuracy follows the decoupling protocol of Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition" (ICLR 2020,
https://arxiv.org/abs/1910.09217): a class is *many-shot* with more than 100 training images,
*few-shot* with fewer than 20 and *medium-shot* in between. Balancedness (how evenly a
representation serves head and tail classes) follows Kang et al., "Exploring Balanced Feature
Spaces for Representation Learning" (ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit).

Every result is a plain dict of floats/ints/lists/None that serialises to JSON; a group without
classes, or a class without test images, has accuracy ``None`` (JSON ``null``), never 0.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from balfeat.atomic import atomic_write_text
from balfeat.errors import BalfeatError

GROUPS: tuple[str, str, str] = ("many", "medium", "few")


@dataclass(frozen=True)
class ShotGrouping:
    """How classes are split into many/medium/few-shot groups by training count.

    Attributes:
        kind: ``"threshold"`` (by count thresholds) or ``"thirds"`` (by rank of the count: the
            most frequent third of the classes is *many*, the least frequent third *few*; useful
            for small datasets such as Fashion-MNIST where no class has 100 images or fewer).
        many_above: a class with ``count > many_above`` is many-shot (default 100).
        few_below: a class with ``count < few_below`` is few-shot (default 20).
        few_inclusive: count ``== few_below`` is few-shot too; the reference code's convention
            (classifier-balancing's ``shot_acc`` treats 20 images as few-shot).
    """

    kind: str = "threshold"
    many_above: int = 100
    few_below: int = 20
    few_inclusive: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("threshold", "thirds"):
            raise BalfeatError(f"unknown shot grouping {self.kind!r}; use 'threshold' or 'thirds'")
        if self.kind == "threshold" and self.few_below > self.many_above + 1:
            raise BalfeatError(
                f"shot grouping thresholds overlap: few_below={self.few_below} > "
                f"many_above={self.many_above}; pick few_below <= many_above"
            )

    def as_dict(self) -> dict[str, Any]:
        """The grouping as a JSON-ready dict."""
        return {
            "kind": self.kind,
            "many_above": self.many_above,
            "few_below": self.few_below,
            "few_inclusive": self.few_inclusive,
        }


def parse_grouping(spec: str | ShotGrouping | None) -> ShotGrouping:
    """Build a :class:`ShotGrouping` from a short spec string.

    Specs: ``"default"`` (>100 / 20-100 / <20), ``"reference"`` (>100 / 20 is few),
    ``"thirds"`` (by count rank), or ``"MANY,FEW"`` thresholds such as ``"100,20"``.
    """
    if spec is None:
        return ShotGrouping()
    if isinstance(spec, ShotGrouping):
        return spec
    s = spec.strip().lower()
    if s in ("default", "threshold", ""):
        return ShotGrouping()
    if s == "reference":
        return ShotGrouping(few_inclusive=True)
    if s == "thirds":
        return ShotGrouping(kind="thirds")
    parts = s.split(",")
    try:
        if len(parts) == 2:
            return ShotGrouping(many_above=int(parts[0]), few_below=int(parts[1]))
    except ValueError:
        pass
    raise BalfeatError(
        f"cannot parse shot grouping {spec!r}; use 'default', 'reference', 'thirds' or "
        "'MANY,FEW' thresholds such as '100,20'"
    )


def _whole(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as int64, refusing values that are not whole numbers (``1.5``, NaN, inf, text)."""
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind != "f" or not bool(np.all(np.isfinite(arr) & (arr == np.round(arr)))):
        shown = arr[:5].tolist() if arr.ndim == 1 else arr.dtype
        raise BalfeatError(
            f"{name} must be whole class ids / counts, got {arr.dtype} values such as {shown}"
        )
    return arr.astype(np.int64)


def _as_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise BalfeatError(f"labels must be 1-D, got shape {arr.shape}")
    return _whole(arr, "labels")


def _predictions(logits_or_preds: Any) -> np.ndarray:
    arr = np.asarray(logits_or_preds)
    if arr.ndim == 2:
        _no_nan(arr)
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim == 1:
        return _whole(arr, "predictions (N,)")
    raise BalfeatError(f"expected logits (N, C) or predictions (N,), got shape {arr.shape}")


def _no_nan(scores: np.ndarray) -> None:
    """Refuse NaN scores: their argmax / ranking means nothing (a diverged classifier)."""
    if scores.dtype.kind in "fc":
        bad = np.isnan(scores).any(axis=1) if scores.ndim == 2 else np.isnan(scores)
        if bool(bad.any()):
            raise BalfeatError(
                f"logits have NaN in {int(bad.sum())} of {bad.shape[0]} rows (first: row "
                f"{int(np.argmax(bad))}); the classifier or its features diverged"
            )


def _as_counts(
    train_counts: Any,
    num_classes: int | None = None,
    against: str = "the scores have",
    whole: bool = True,
) -> np.ndarray:
    """Training images per class (C,): 1-D, finite, ``>= 0``, C = ``num_classes``.

    ``whole=True``: whole numbers, returned as int64; ``whole=False``: any finite values
    (balancedness only takes their log), returned as float64.
    """
    arr = np.asarray(train_counts)
    if arr.ndim != 1:
        raise BalfeatError(f"train_counts must be 1-D (C,), got shape {arr.shape}")
    if whole:
        counts = _whole(arr, "train_counts")
    elif arr.dtype.kind in "iuf" and bool(np.all(np.isfinite(arr))):
        counts = arr.astype(np.float64)
    else:
        raise BalfeatError(f"train_counts must be finite numbers, got {arr.dtype} {arr[:5]}")
    if counts.size and counts.min() < 0:
        raise BalfeatError(
            f"train_counts must be >= 0, got {counts.min()} (class {counts.argmin()})"
        )
    if num_classes is not None and counts.shape[0] != num_classes:
        raise BalfeatError(
            f"train_counts has {counts.shape[0]} classes but {against} {num_classes}; "
            "pass one training count per class"
        )
    return counts


def topk_accuracy(logits: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent.

    Args:
        logits: scores. Shape: (N, C).
        labels: true classes. Shape: (N,).
        ks: the k values; k larger than C counts every sample as correct.

    Returns:
        ``{k: accuracy in [0, 100]}``; ``nan`` for each k when N is 0.
    """
    if any(k < 1 for k in ks):
        raise BalfeatError(f"top-k accuracy needs every k >= 1, got ks={tuple(ks)}")
    scores = np.asarray(logits)
    y = _as_labels(labels)
    if scores.ndim != 2 or scores.shape[0] != y.shape[0]:
        raise BalfeatError(
            f"logits must be (N, C) with N = len(labels) = {y.shape[0]}, got {scores.shape}"
        )
    _no_nan(scores)
    out: dict[int, float] = {}
    if y.shape[0] == 0:
        return {k: float("nan") for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (order[:, :kk] == y[:, None]).any(axis=1)
        out[k] = float(hit.mean() * 100.0)
    return out


def per_class_accuracy(
    logits_or_preds: Any, labels: Any, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of each class in percent.

    Args:
        logits_or_preds: logits (N, C) or predicted classes (N,).
        labels: true classes. Shape: (N,).
        num_classes: C; defaults to the logits width or ``max(label) + 1``.

    Returns:
        ``(accuracy, test_count)``, both shape (C,); accuracy is ``nan`` for a class with no
        test sample.
    """
    preds = _predictions(logits_or_preds)
    y = _as_labels(labels)
    if preds.shape[0] != y.shape[0]:
        raise BalfeatError(f"{preds.shape[0]} predictions but {y.shape[0]} labels")
    if num_classes is None:
        arr = np.asarray(logits_or_preds)
        num_classes = arr.shape[1] if arr.ndim == 2 else int(y.max(initial=-1)) + 1
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise BalfeatError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=num_classes).astype(np.int64)
    correct = np.bincount(y[preds == y], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, correct / np.maximum(counts, 1) * 100.0, np.nan)
    return acc, counts


def shot_groups(train_counts: Any, grouping: str | ShotGrouping | None = None) -> np.ndarray:
    """Group id of each class: 0 many, 1 medium, 2 few.

    Args:
        train_counts: training images per class. Shape: (C,).
        grouping: a :class:`ShotGrouping` or spec for :func:`parse_grouping`.

    Returns:
        Group ids. Shape: (C,).
    """
    g = parse_grouping(grouping)
    counts = _as_counts(train_counts)
    if g.kind == "thirds":
        c = counts.shape[0]
        # Stable rank by descending count; ties keep class order so the result is deterministic.
        order = np.argsort(-counts, kind="stable")
        ids = np.empty(c, dtype=np.int64)
        bounds = [round(c / 3), round(2 * c / 3)]
        for rank, cls in enumerate(order):
            ids[cls] = 0 if rank < bounds[0] else (1 if rank < bounds[1] else 2)
        return ids
    few = counts <= g.few_below if g.few_inclusive else counts < g.few_below
    many = counts > g.many_above
    return np.where(many, 0, np.where(few, 2, 1)).astype(np.int64)


def _mean_or_none(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def shot_accuracy(
    logits_or_preds: Any,
    labels: Any,
    train_counts: Any,
    grouping: str | ShotGrouping | None = None,
) -> dict[str, Any]:
    """Many/medium/few-shot accuracy (mean of per-class accuracies within each group).

    Args:
        logits_or_preds: logits (N, C) or predicted classes (N,).
        labels: true classes. Shape: (N,).
        train_counts: training images per class. Shape: (C,).
        grouping: see :func:`shot_groups`.

    Returns:
        ``{"many", "medium", "few"}`` accuracies in percent (``None`` for an empty group) and
        ``"groups"``: for each group its classes and count range. A class without test samples
        has no accuracy and is left out of its group's mean (``None`` when no class of the
        group has one); :func:`per_class_accuracy`'s ``test_count`` shows which.
    """
    scores = np.asarray(logits_or_preds)
    counts = _as_counts(train_counts, scores.shape[1] if scores.ndim == 2 else None, "logits have")
    acc, _ = per_class_accuracy(logits_or_preds, labels, num_classes=counts.shape[0])
    ids = shot_groups(counts, grouping)
    out: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for gid, name in enumerate(GROUPS):
        members = np.flatnonzero(ids == gid)
        out[name] = _mean_or_none(acc[members])
        groups[name] = {
            "classes": [int(c) for c in members],
            "num_classes": int(members.size),
            "min_train_count": int(counts[members].min()) if members.size else None,
            "max_train_count": int(counts[members].max()) if members.size else None,
        }
    out["groups"] = groups
    return out


def balancedness(
    class_accuracy: Any, train_counts: Any, group_accuracy: Sequence[float | None] | None = None
) -> dict[str, float | None]:
    """How evenly a classifier serves frequent and rare classes.

    Args:
        class_accuracy: per-class accuracy in percent (``nan`` for classes without test data).
            Shape: (C,).
        train_counts: training images per class. Shape: (C,).
        group_accuracy: many/medium/few accuracies (``None`` for empty groups).

    Returns:
        ``group_std``: population std of the non-empty group accuracies (0 is perfectly balanced;
        ``None`` with fewer than 2 groups); ``slope``: least-squares slope of per-class accuracy
        (percent) against ``log(train_count)`` (natural log; near 0 is balanced, positive favours
        head classes); ``pearson``: their correlation. Both are ``None`` when the classes do not
        differ in count or accuracy.
    """
    acc = np.asarray(class_accuracy, dtype=np.float64)
    if acc.ndim != 1:
        raise BalfeatError(f"class_accuracy must be 1-D (C,), got shape {acc.shape}")
    counts = _as_counts(train_counts, acc.shape[0], "class_accuracy has", whole=False)
    out: dict[str, float | None] = {"group_std": None, "slope": None, "pearson": None}
    if group_accuracy is not None:
        vals = np.array([v for v in group_accuracy if v is not None], dtype=np.float64)
        if vals.size >= 2:
            out["group_std"] = float(vals.std())
    keep = np.isfinite(acc) & (counts > 0)
    if keep.sum() >= 2:
        x = np.log(counts[keep])
        y = acc[keep]
        xc = x - x.mean()
        yc = y - y.mean()
        sxx = float((xc * xc).sum())
        syy = float((yc * yc).sum())
        if sxx > 0:
            out["slope"] = float((xc * yc).sum() / sxx)
            if syy > 0:
                out["pearson"] = float((xc * yc).sum() / math.sqrt(sxx * syy))
    return out


def change_slope(class_accuracy: Any, balanced_accuracy: Any, train_counts: Any) -> float | None:
    """Head bias without class difficulty: the slope of each class's accuracy *change* (after
    the imbalanced set minus after the same method and seed's balanced set) against
    ``ln(train_count)`` of the imbalanced set; > 0: frequent classes gained on rare ones.

    The raw slope of :func:`balancedness` regresses the accuracy itself, so it also says which
    classes are hard and is far from 0 even after balanced pre-training; the change cancels that.
    Shapes: (C,) each. ``None`` as in :func:`balancedness`.
    """
    acc = np.asarray(class_accuracy, dtype=np.float64)
    ref = np.asarray(balanced_accuracy, dtype=np.float64)
    if acc.ndim != 1 or acc.shape != ref.shape:
        raise BalfeatError(f"per-class accuracies of shapes {acc.shape} and {ref.shape}: need (C,)")
    return balancedness(acc - ref, train_counts)["slope"]


def evaluate(
    logits: Any,
    labels: Any,
    train_counts: Any,
    class_names: Sequence[str] | None = None,
    grouping: str | ShotGrouping | None = None,
) -> dict[str, Any]:
    """All metrics of a classifier on a test set.

    Args:
        logits: scores. Shape: (N, C).
        labels: true classes. Shape: (N,).
        train_counts: training images per class. Shape: (C,).
        class_names: optional names. Length: C.
        grouping: many/medium/few grouping (see :func:`parse_grouping`).

    Returns:
        A JSON-ready dict: ``top1``, ``top5``, ``many``, ``medium``, ``few``,
        ``mean_class_accuracy``, ``balancedness``, ``groups``, ``grouping``, ``per_class`` (one
        dict per class: ``class, name, train_count, test_count, accuracy``), ``num_samples``,
        ``classes_without_test`` (the classes with no test sample: their accuracy is ``None``
        and they are left out of ``mean_class_accuracy`` and of the many/medium/few means).
    """
    scores = np.asarray(logits)
    counts = _as_counts(train_counts)
    if scores.ndim != 2 or scores.shape[1] != counts.shape[0]:
        raise BalfeatError(
            f"logits must be (N, C) with C = len(train_counts) = {counts.shape[0]}, "
            f"got {scores.shape}"
        )
    if class_names is not None and len(class_names) != counts.shape[0]:
        raise BalfeatError(
            f"{len(class_names)} class names for {counts.shape[0]} classes; pass one name per class"
        )
    g = parse_grouping(grouping)
    topk = topk_accuracy(scores, labels, ks=(1, 5))
    acc, test_counts = per_class_accuracy(scores, labels, num_classes=counts.shape[0])
    shots = shot_accuracy(scores, labels, counts, g)
    bal = balancedness(acc, counts, [shots[n] for n in GROUPS])
    per_class = [
        {
            "class": c,
            "name": class_names[c] if class_names is not None else str(c),
            "train_count": int(counts[c]),
            "test_count": int(test_counts[c]),
            "accuracy": None if not np.isfinite(acc[c]) else float(acc[c]),
        }
        for c in range(counts.shape[0])
    ]
    return {
        "top1": _nan_to_none(topk[1]),
        "top5": _nan_to_none(topk[5]),
        "many": shots["many"],
        "medium": shots["medium"],
        "few": shots["few"],
        "mean_class_accuracy": _mean_or_none(acc),
        "balancedness": bal,
        "groups": shots["groups"],
        "grouping": g.as_dict(),
        "num_samples": int(np.asarray(labels).shape[0]),
        "classes_without_test": [int(c) for c in np.flatnonzero(test_counts == 0)],
        "per_class": per_class,
    }


def _nan_to_none(x: float) -> float | None:
    return None if not math.isfinite(x) else x


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_summary(results: dict[str, Any]) -> str:
    """One line per headline metric, for printing."""

    def fmt(v: Any) -> str:
        return "n/a (empty)" if v is None else f"{v:.2f}"

    bal = results.get("balancedness", {})
    lines = [
        f"top1 {fmt(results.get('top1'))}  top5 {fmt(results.get('top5'))}",
        f"many {fmt(results.get('many'))}  medium {fmt(results.get('medium'))}  "
        f"few {fmt(results.get('few'))}",
        f"balancedness: group std {fmt(bal.get('group_std'))}  "
        f"slope vs log(count) {fmt(bal.get('slope'))}  pearson {fmt(bal.get('pearson'))}",
    ]
    return "\n".join(lines)


def write_results(out_dir: str | os.PathLike[str], results: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``per_class.csv`` into ``out_dir`` atomically (tmp + rename).

    Args:
        out_dir: the directory, created if missing.
        results: a dict from :func:`evaluate` (plus any extra keys such as ``protocol``); its
            ``per_class`` list becomes the CSV.

    Returns:
        The paths of the JSON and the CSV.
    """
    d = Path(out_dir)
    clean = _jsonable(results)
    json_path = d / "results.json"
    csv_path = d / "per_class.csv"
    atomic_write_text(json_path, json.dumps(clean, indent=2, allow_nan=False) + "\n")
    rows = clean.get("per_class", [])
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "name", "train_count", "test_count", "accuracy"])
    for r in rows:
        acc = r.get("accuracy")
        writer.writerow(
            [
                r["class"],
                r["name"],
                r["train_count"],
                r["test_count"],
                "" if acc is None else f"{acc:.4f}",
            ]
        )
    atomic_write_text(csv_path, buf.getvalue())
    return json_path, csv_path
