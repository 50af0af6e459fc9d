"""Figures of a study: probe accuracy against imbalance, per-class accuracy against training
count, many/medium/few bars and balancedness, one PNG each (matplotlib, Agg backend).

Every function takes the *results table* of a study: a list of rows (dicts), one per
(method, imbalance set, protocol) cell, with the keys

- ``method`` (str), ``set`` (str, e.g. ``LT0`` / ``balanced`` / ``exp100``), ``imbalance_ratio``
  (float, n_max / n_min of the pre-training set; 1 = balanced), ``protocol`` (str);
- ``top1``, ``many``, ``medium``, ``few`` (percent, ``None`` for an empty group), ``group_std``
  and ``slope`` (balancedness, see :func:`balfeat.evaluation.metrics.balancedness`);
- ``train_counts`` (list of int, per class, of the pre-training set) and ``per_class_accuracy``
  (list of float or ``None``, per class, of the probe on the test set).

This mirrors the paper's headline figure (Kang et al., ICLR 2021, Fig. 1): the accuracy of a
linear probe on a *balanced* training set, as the pre-training set gets more imbalanced, one line
per representation-learning method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = dict[str, Any]

#: Display order and colours of the methods (others follow in first-seen order).
METHOD_ORDER: tuple[str, ...] = (
    "sl", "moco_v1", "moco_v2", "kcl", "supcon", "supcon_inbatch", "tsc", "bcl", "paco", "gpaco",
)  # fmt: skip
METHOD_LABELS: dict[str, str] = {
    "sl": "SL (supervised)",
    "moco_v1": "MoCo v1",
    "moco_v2": "MoCo v2",
    "kcl": "KCL",
    "supcon": "SupCon (queue)",
    "supcon_inbatch": "SupCon (in-batch)",
    "tsc": "TSC",
    "bcl": "BCL",
    "paco": "PaCo",
    "gpaco": "GPaCo",
}
_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
]  # fmt: skip
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
#: Above this many methods a figure drops the per-point value labels (they would overlap), puts
#: the legend beside the axes and spreads each set's error bars sideways.
_CROWDED = 4
_GROUPS = ("many", "medium", "few")
_DPI = 110


def method_label(method: str) -> str:
    """Human-readable name of a method id (``moco_v2`` -> ``MoCo v2``): its registry label; an
    id no method is registered under (an old results file) prints as it is."""
    from balfeat.methods import METHODS

    entry = METHODS.get(method)
    return entry.label if entry is not None else method


def ordered_methods(rows: Sequence[Row]) -> list[str]:
    """The methods of ``rows``: known ones in :data:`METHOD_ORDER`, then the rest as seen."""
    seen: list[str] = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(str(r["method"]))
    known = [m for m in METHOD_ORDER if m in seen]
    return known + [m for m in seen if m not in known]


def ordered_sets(rows: Sequence[Row]) -> list[str]:
    """The imbalance sets of ``rows`` from the most balanced to the most imbalanced.

    Sorted by ``imbalance_ratio`` (ties keep first-seen order), so ``LT0 .. LT8, LT`` or
    ``balanced, exp10, exp100`` read left to right as increasing imbalance.
    """
    first: dict[str, tuple[float, int]] = {}
    for i, r in enumerate(rows):
        name = str(r["set"])
        if name not in first:
            first[name] = (float(r.get("imbalance_ratio") or 1.0), i)
    return sorted(first, key=lambda s: first[s])


def _style(i: int) -> dict[str, Any]:
    return {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}


def _num(v: Any) -> float:
    """A table value as float, ``nan`` for ``None``/missing."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _set_label(rows: Sequence[Row], name: str) -> str:
    for r in rows:
        if r["set"] == name:
            ratio = _num(r.get("imbalance_ratio"))
            if math.isfinite(ratio):
                return f"{name}\n(ratio {ratio:g})"
    return name


def _finish(fig: Any, path: Path, top: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, top))
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _protocol_subset(rows: Sequence[Row], protocol: str | None) -> list[Row]:
    if protocol is None:
        protocols = sorted({str(r.get("protocol", "")) for r in rows})
        protocol = protocols[0] if protocols else None
    return [r for r in rows if protocol is None or str(r.get("protocol", "")) == protocol]


def plot_accuracy_vs_imbalance(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, title: str | None = None
) -> Path:
    """Probe top-1 accuracy (y) against the imbalance set (x), one line per method.

    Args:
        rows: the results table.
        path: PNG to write.
        protocol: the probe protocol to plot (default: the first in sorted order).
        title: figure title (default names the protocol).

    Returns:
        The path written.
    """
    rows = _protocol_subset(rows, protocol)
    sets = ordered_sets(rows)
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    methods = ordered_methods(rows)
    table: list[list[float]] = []
    for m in methods:
        ys = []
        for s in sets:
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            ys.append(_num(match[0].get("top1")) if match else math.nan)
        table.append(ys)
    crowded = len(methods) > _CROWDED
    if crowded:
        fig.set_size_inches(9.0, 4.8)
    for i, m in enumerate(methods):
        ys = table[i]
        lo, hi = _err(rows, m, sets, "top1", ys)
        dodge = (i - (len(methods) - 1) / 2) * 0.04 if crowded else 0.0
        ax.errorbar(
            [x + dodge for x in range(len(sets))],
            ys,
            yerr=[lo, hi],
            linewidth=2,
            markersize=7,
            capsize=4,
            label=method_label(m),
            **_style(i),
        )
        for x, y in enumerate(ys):
            if crowded or not math.isfinite(y):
                continue
            # Label above the point unless another line sits just above it: then below.
            others = [t[x] - y for k, t in enumerate(table) if k != i and math.isfinite(t[x])]
            above_gap = min([d for d in others if d >= 0], default=math.inf)
            below_gap = min([-d for d in others if d < 0], default=math.inf)
            below = above_gap < below_gap
            ax.annotate(
                f"{y:.1f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, -13) if below else (0, 7),
                ha="center",
                fontsize=8,
                color=_style(i)["color"],
            )
    ax.set_xticks(range(len(sets)))
    ax.set_xticklabels([_set_label(rows, s) for s in sets])
    ax.set_xlabel("pre-training set (more imbalanced to the right)")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    proto = str(rows[0].get("protocol", "")) if rows else ""
    ax.set_title(title or f"Probe accuracy vs. imbalance of the pre-training set ({proto} probe)")
    ax.grid(True, alpha=0.3)
    if crowded:  # beside the axes: inside it would cover points
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        ax.legend(loc="best")
    ax.margins(y=0.15)
    return _finish(fig, Path(path))


def _figure_legend(fig: Any, ax: Any, title: str) -> None:
    """One legend for a row of panels, in the figure's top-right corner, from ``ax``'s entries."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            title=title,
            loc="upper right",
            ncol=len(labels),
            fontsize=9,
            bbox_to_anchor=(0.995, 0.995),
        )


def plot_per_class_vs_count(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None
) -> Path:
    """Per-class probe accuracy (y) against the class's training count (log x), per method.

    One panel per method; each imbalance set is a colour. Classes of a balanced set sit on one
    vertical line. A flat cloud means a balanced representation; a rising one favours the head.

    Args:
        rows: the results table (rows need ``train_counts`` and ``per_class_accuracy``).
        path: PNG to write.
        protocol: the probe protocol to plot (default: the first in sorted order).

    Returns:
        The path written.
    """
    rows = _protocol_subset(rows, protocol)
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    n = max(len(methods), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), sharey=True, squeeze=False)
    for j, m in enumerate(methods):
        ax = axes[0][j]
        for i, s in enumerate(sets):
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            if not match:
                continue
            counts = [_num(c) for c in match[0].get("train_counts") or []]
            accs = [_num(a) for a in match[0].get("per_class_accuracy") or []]
            pts = [
                (c, a)
                for c, a in zip(counts, accs, strict=False)
                if math.isfinite(c) and c > 0 and math.isfinite(a)
            ]
            if not pts:
                continue
            st = _style(i)
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                s=28,
                alpha=0.8,
                color=st["color"],
                marker=st["marker"],
                label=s,
            )
        ax.set_xscale("log")
        ax.set_title(method_label(m))
        ax.set_xlabel("training images of the class (pre-training set, log)")
        if j == 0:
            ax.set_ylabel("per-class probe accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    _figure_legend(fig, axes[0][0], title="pre-training set")
    fig.suptitle("Per-class probe accuracy vs. training count of the class", x=0.35)
    return _finish(fig, Path(path), top=0.9)


def plot_per_class_change_vs_count(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None
) -> Path | None:
    """Per-class accuracy *change* from the balanced set (y) against training count (log x).

    For each method, each class's probe accuracy after pre-training on an imbalanced set minus
    its accuracy after pre-training on the method's balanced set (``imbalance_ratio == 1``).
    Subtracting the same class's balanced accuracy removes how hard the class is, so a falling
    cloud towards the left shows the rare classes losing most. ``None`` (no balanced set).

    Args:
        rows: the results table.
        path: PNG to write.
        protocol: the probe protocol to plot (default: the first in sorted order).

    Returns:
        The path written, or ``None`` when no method has a balanced set.
    """
    rows = _protocol_subset(rows, protocol)
    methods = [
        m
        for m in ordered_methods(rows)
        if any(r["method"] == m and _num(r.get("imbalance_ratio")) == 1.0 for r in rows)
    ]
    if not methods:
        return None
    sets = [
        s
        for s in ordered_sets(rows)
        if all(_num(r.get("imbalance_ratio")) != 1.0 for r in rows if r["set"] == s)
    ]
    n = len(methods)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), sharey=True, squeeze=False)
    for j, m in enumerate(methods):
        ax = axes[0][j]
        ref = next(r for r in rows if r["method"] == m and _num(r.get("imbalance_ratio")) == 1.0)
        ref_acc = [_num(a) for a in ref.get("per_class_accuracy") or []]
        for i, s in enumerate(sets):
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            if not match:
                continue
            counts = [_num(c) for c in match[0].get("train_counts") or []]
            accs = [_num(a) for a in match[0].get("per_class_accuracy") or []]
            pts = [
                (c, a - b)
                for c, a, b in zip(counts, accs, ref_acc, strict=False)
                if math.isfinite(c) and c > 0 and math.isfinite(a) and math.isfinite(b)
            ]
            if not pts:
                continue
            st = _style(i + 1)
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                s=30,
                alpha=0.85,
                color=st["color"],
                marker=st["marker"],
                label=s,
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(method_label(m))
        ax.set_xlabel("training images of the class (log)")
        if j == 0:
            ax.set_ylabel("accuracy minus balanced-set accuracy (points)")
        ax.grid(True, which="both", alpha=0.3)
    _figure_legend(fig, axes[0][0], title="pre-training set")
    fig.suptitle("Per-class change from the balanced pre-training set", x=0.35)
    return _finish(fig, Path(path), top=0.9)


def plot_shot_bars(rows: Sequence[Row], path: str | Path, protocol: str | None = None) -> Path:
    """Many/medium/few accuracy bars, grouped per method, one panel per imbalance set.

    Args:
        rows: the results table.
        path: PNG to write.
        protocol: the probe protocol to plot (default: the first in sorted order).

    Returns:
        The path written.
    """
    rows = _protocol_subset(rows, protocol)
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    n = max(len(sets), 1)
    crowded = len(methods) > _CROWDED
    panel = 0.75 * len(methods) + 1.2 if crowded else 4.2
    fig, axes = plt.subplots(1, n, figsize=(panel * n, 4.4), sharey=True, squeeze=False)
    width = 0.8 / len(_GROUPS)
    group_colors = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}
    for j, s in enumerate(sets):
        ax = axes[0][j]
        for g_i, g in enumerate(_GROUPS):
            xs, ys = [], []
            for i, m in enumerate(methods):
                match = [r for r in rows if r["method"] == m and r["set"] == s]
                xs.append(i + (g_i - 1) * width)
                ys.append(_num(match[0].get(g)) if match else math.nan)
            heights = [0.0 if not math.isfinite(y) else y for y in ys]
            lo, hi = [], []
            for m, y in zip(methods, ys, strict=True):
                a, b = _err(rows, m, [s], g, [y])
                lo.append(a[0])
                hi.append(b[0])
            bars = ax.bar(
                xs,
                heights,
                width=width,
                color=group_colors[g],
                label=g if j == 0 else None,
                yerr=[lo, hi],
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
            for b, y in zip(bars, ys, strict=True):
                if crowded and math.isfinite(y):  # the error bars carry it; labels would overlap
                    continue
                text = "n/a" if not math.isfinite(y) else f"{y:.0f}"
                ax.annotate(
                    text,
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    textcoords="offset points",
                    xytext=(0, 2),
                    ha="center",
                    fontsize=7,
                )
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(
            [method_label(m) for m in methods],
            fontsize=9,
            rotation=30 if crowded else 0,
            ha="right" if crowded else "center",
        )
        ax.set_title(_set_label(rows, s).replace("\n", " "))
        if j == 0:
            ax.set_ylabel("probe accuracy (%)")
        ax.set_ylim(0, 105)
        ax.grid(True, axis="y", alpha=0.3)
    fig.legend(loc="upper right", ncol=3, fontsize=9, bbox_to_anchor=(0.995, 0.995))
    fig.suptitle("Many / medium / few-shot accuracy (groups fixed for the study)", x=0.4)
    return _finish(fig, Path(path), top=0.93)


def plot_balancedness(rows: Sequence[Row], path: str | Path, protocol: str | None = None) -> Path:
    """Balancedness per method against the imbalance set: std of the many/medium/few accuracies
    (left) and the slope of per-class accuracy against log training count (right); 0 is
    perfectly balanced on both.

    Args:
        rows: the results table.
        path: PNG to write.
        protocol: the probe protocol to plot (default: the first in sorted order).

    Returns:
        The path written.
    """
    rows = _protocol_subset(rows, protocol)
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), squeeze=False)
    specs = [
        ("group_std", "std of many/medium/few accuracy (points)"),
        ("slope", "slope of accuracy vs. ln(train count)"),
    ]
    width = 0.8 / max(len(methods), 1)
    for k, (key, ylabel) in enumerate(specs):
        ax = axes[0][k]
        for i, m in enumerate(methods):
            ys = []
            for s in sets:
                match = [r for r in rows if r["method"] == m and r["set"] == s]
                ys.append(_num(match[0].get(key)) if match else math.nan)
            xs = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(sets))]
            ax.bar(
                xs,
                [0.0 if not math.isfinite(y) else y for y in ys],
                width=width,
                color=_style(i)["color"],
                label=method_label(m),
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels([_set_label(rows, s) for s in sets])
        ax.set_ylabel(ylabel)
        ax.set_xlabel("pre-training set")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_title("Gap between class groups (lower = more balanced)")
    axes[0][1].set_title("Head bias (0 = balanced, > 0 favours frequent classes)")
    return _finish(fig, Path(path))


def _err(
    rows: Sequence[Row], method: str, sets: Sequence[str], key: str, ys: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Lower and upper error-bar lengths from a summary row's ``<key>_ci`` (0 without one)."""
    lo, hi = [], []
    for s, y in zip(sets, ys, strict=True):
        match = [r for r in rows if r["method"] == method and r["set"] == s]
        ci = match[0].get(f"{key}_ci") if match else None
        if ci and ci[0] is not None and ci[1] is not None and math.isfinite(y):
            lo.append(max(0.0, y - float(ci[0])))
            hi.append(max(0.0, float(ci[1]) - y))
        else:
            lo.append(0.0)
            hi.append(0.0)
    return lo, hi


def plot_knn_curves(study_dir: str | Path, path: str | Path) -> Path | None:
    """Online kNN accuracy against epoch, one line per cell and seed, from the ``knn_top1``
    lines of each cell's ``metrics.jsonl``; ``None`` when no cell logged any."""
    import json

    curves: dict[str, list[tuple[float, float]]] = {}
    for f in sorted(Path(study_dir).glob("cells/*/seed*/pretrain/metrics.jsonl")):
        pts: list[tuple[float, float]] = []
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("knn_top1"), (int, float)):
                pts.append((float(rec.get("epoch", len(pts) + 1)), float(rec["knn_top1"])))
        if pts:
            cell, seed = f.parts[-4], f.parts[-3]
            curves[f"{cell} {seed}"] = pts
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for i, (name, pts) in enumerate(curves.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **_style(i))
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 accuracy (%)")
    ax.set_title("Online kNN monitor during pre-training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, Path(path))


def plot_all(rows: Sequence[Row], out_dir: str | Path) -> dict[str, Path]:
    """Write every figure of a study into ``out_dir``; returns ``{figure name: path}``.

    With several probe protocols, each figure is drawn once per protocol (file name suffix
    ``_<protocol>``); with one, the file names carry no suffix.
    """
    out = Path(out_dir)
    protocols = sorted({str(r.get("protocol", "")) for r in rows})
    figures: dict[str, Path] = {}
    for p in protocols:
        suffix = f"_{p}" if len(protocols) > 1 else ""
        figures[f"accuracy_vs_imbalance{suffix}"] = plot_accuracy_vs_imbalance(
            rows, out / f"accuracy_vs_imbalance{suffix}.png", protocol=p
        )
        figures[f"per_class_vs_count{suffix}"] = plot_per_class_vs_count(
            rows, out / f"per_class_vs_count{suffix}.png", protocol=p
        )
        change = plot_per_class_change_vs_count(
            rows, out / f"per_class_change_vs_count{suffix}.png", protocol=p
        )
        if change is not None:
            figures[f"per_class_change_vs_count{suffix}"] = change
        figures[f"shot_accuracy{suffix}"] = plot_shot_bars(
            rows, out / f"shot_accuracy{suffix}.png", protocol=p
        )
        figures[f"balancedness{suffix}"] = plot_balancedness(
            rows, out / f"balancedness{suffix}.png", protocol=p
        )
    return figures
