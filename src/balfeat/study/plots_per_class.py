"""Per-class figures of a study: each class's probe accuracy against its pre-training count, and
its change from the same method's balanced-set run (one panel per method, panels wrap)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from balfeat.study.plots import (
    DPI,
    Row,
    _num,
    _protocol_subset,
    _style,
    display_name,
    legend_below,
    ordered_methods,
    ordered_sets,
    panel_grid,
    save_figure,
)


def _points(row: Row, ref: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """``(count, accuracy)`` of each class with both (minus ``ref[c]`` when given)."""
    counts = [_num(c) for c in row.get("train_counts") or []]
    accs = [_num(a) for a in row.get("per_class_accuracy") or []]
    base = list(ref) if ref is not None else [0.0] * len(accs)
    return [
        (c, a - b)
        for c, a, b in zip(counts, accs, base, strict=False)
        if math.isfinite(c) and c > 0 and math.isfinite(a) and math.isfinite(b)
    ]


def _has_per_class(rows: Sequence[Row]) -> bool:
    return any(r.get("per_class_accuracy") and r.get("train_counts") for r in rows)


def plot_per_class_vs_count(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """Per-class probe accuracy (y) against the class's training count (log x), per method.

    One panel per method (panels wrap); each
    imbalance set is a colour. Classes of a balanced set sit on one vertical line.

    Args:
        rows: the summary table (rows need ``train_counts`` and ``per_class_accuracy``).
        path: PNG to write (a PDF beside it).
        protocol: the probe protocol to plot (default: the first in sorted order).
        dpi: PNG resolution.

    Returns:
        The PNG path, or ``None`` when no row has per-class accuracies.
    """
    rows = _protocol_subset(rows, protocol)
    if not _has_per_class(rows):
        return None
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    fig, axes = panel_grid(len(methods))
    for m, ax in zip(methods, axes, strict=True):
        for i, s in enumerate(sets):
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            pts = _points(match[0]) if match else []
            if pts:
                st = _style(i)
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    s=22,
                    alpha=0.8,
                    color=st["color"],
                    marker=st["marker"],
                    label=s,
                )
        ax.set_xscale("log")
        ax.set_title(display_name(m), fontsize=10)
        ax.set_xlabel("class's pre-training images (log)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("per-class probe accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    legend_below(fig, axes, title="pre-training set")
    fig.suptitle("Per-class probe accuracy vs. pre-training count of the class")
    return save_figure(fig, path, dpi)


def plot_per_class_change_vs_count(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """Per-class accuracy *change* from the balanced set (y) against training count (log x).

    For each method, each class's probe accuracy after pre-training on an imbalanced set minus
    its accuracy after pre-training on the method's balanced set (``imbalance_ratio == 1``).
    Subtracting the same class's balanced accuracy removes how hard the class is, so a falling
    cloud towards the left shows the rare classes losing most.

    Returns:
        The PNG path, or ``None`` when no method has a balanced set or no row has per-class
        accuracies.
    """
    rows = _protocol_subset(rows, protocol)
    methods = [
        m
        for m in ordered_methods(rows)
        if any(r["method"] == m and _num(r.get("imbalance_ratio")) == 1.0 for r in rows)
    ]
    if not methods or not _has_per_class(rows):
        return None
    sets = [
        s
        for s in ordered_sets(rows)
        if all(_num(r.get("imbalance_ratio")) != 1.0 for r in rows if r["set"] == s)
    ]
    fig, axes = panel_grid(len(methods))
    for m, ax in zip(methods, axes, strict=True):
        ref = next(r for r in rows if r["method"] == m and _num(r.get("imbalance_ratio")) == 1.0)
        ref_acc = [_num(a) for a in ref.get("per_class_accuracy") or []]
        for i, s in enumerate(sets):
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            pts = _points(match[0], ref_acc) if match and ref_acc else []
            if pts:
                st = _style(i + 1)
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    s=24,
                    alpha=0.85,
                    color=st["color"],
                    marker=st["marker"],
                    label=s,
                )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(display_name(m), fontsize=10)
        ax.set_xlabel("class's pre-training images (log)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("change from balanced set (points)")
        ax.grid(True, which="both", alpha=0.3)
    legend_below(fig, axes, title="pre-training set")
    fig.suptitle("Per-class accuracy change from the balanced pre-training set (mean over seeds)")
    return save_figure(fig, path, dpi)
