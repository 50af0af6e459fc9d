"""Per-class figures of a study: each class's probe accuracy against its pre-training count, and
its change from the same method's balanced-set run (one panel per method, panels wrap)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from balfeat.study.plots import (
    DPI,
    Row,
    _num,
    _protocol_subset,
    _style,
    accuracy_source,
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


def _scatter_panels(
    methods: Sequence[str],
    sets: Sequence[str],
    points: Callable[[str, str], list[tuple[float, float]]],
    ylabel: str,
    title: str,
    path: str | Path,
    dpi: int,
    first_style: int = 0,
    zero_line: bool = False,
) -> Path:
    """One log-x scatter panel per method (panels wrap), one colour and marker per set,
    ``points(method, set)`` the ``(count, value)`` of each class; one legend below."""
    fig, axes = panel_grid(len(methods))
    for m, ax in zip(methods, axes, strict=True):
        for i, s in enumerate(sets):
            pts = points(m, s)
            if pts:
                st = _style(i + first_style)
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    s=24,
                    alpha=0.85,
                    color=st["color"],
                    marker=st["marker"],
                    label=s,
                )
        if zero_line:
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(display_name(m), fontsize=10)
        ax.set_xlabel("class's pre-training images (log)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    legend_below(fig, axes, title="pre-training set")
    fig.suptitle(title)
    return save_figure(fig, path, dpi)


def _row(rows: Sequence[Row], method: str, set_name: str) -> Row | None:
    return next((r for r in rows if r["method"] == method and r["set"] == set_name), None)


def plot_per_class_vs_count(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """Per-class probe accuracy (y) against the class's training count (log x), per method.

    One panel per method (panels wrap); each imbalance set is a colour. Classes of a balanced
    set sit on one vertical line.

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

    def points(m: str, s: str) -> list[tuple[float, float]]:
        row = _row(rows, m, s)
        return _points(row) if row is not None else []

    return _scatter_panels(
        ordered_methods(rows),
        ordered_sets(rows),
        points,
        f"per-class {accuracy_source(rows)} accuracy (%)",
        "Per-class accuracy vs. pre-training count of the class (mean over seeds)",
        path,
        dpi,
    )


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
    balanced: dict[str, Row] = {}  # each method's (first) balanced-set row
    for r in rows:
        if _num(r.get("imbalance_ratio")) == 1.0:
            balanced.setdefault(str(r["method"]), r)
    methods = [m for m in ordered_methods(rows) if m in balanced]
    if not methods or not _has_per_class(rows):
        return None
    sets = [
        s
        for s in ordered_sets(rows)
        if all(_num(r.get("imbalance_ratio")) != 1.0 for r in rows if r["set"] == s)
    ]

    def points(m: str, s: str) -> list[tuple[float, float]]:
        row = _row(rows, m, s)
        ref = [_num(a) for a in balanced[m].get("per_class_accuracy") or []]
        return _points(row, ref) if row is not None and ref else []

    return _scatter_panels(
        methods,
        sets,
        points,
        "change from balanced set (points)",
        "Per-class accuracy change from the balanced pre-training set (mean over seeds)",
        path,
        dpi,
        first_style=1,
        zero_line=True,
    )
