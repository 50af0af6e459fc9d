"""Figures of a study (matplotlib, Agg backend): the shared look (method order, colours, display
names, panel grid, saving as PNG + PDF at a chosen dpi), the accuracy-against-imbalance figure and
:mod:`balfeat.study.figures` draws them all. The other figures live beside it:
:mod:`balfeat.study.plots_paired` (paired changes, gains over the control),
:mod:`balfeat.study.plots_groups` (many/medium/few, balancedness),
:mod:`balfeat.study.plots_per_class` and :mod:`balfeat.study.plots_knn`.

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

# the control row (drawn grey and dashed, listed first) and what a reader sees for a method
from balfeat.study.summary import CONTROL, display_name
from balfeat.study.summary import CONTROL_LABEL as CONTROL_LABEL
from balfeat.study.summary import method_label as method_label

Row = dict[str, Any]

#: Display order and colours of the methods (others follow in first-seen order).
METHOD_ORDER: tuple[str, ...] = (
    "sl", "moco_v1", "moco_v2", "kcl", "supcon", "supcon_inbatch", "tsc", "bcl", "paco", "gpaco",
)  # fmt: skip
_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
]  # fmt: skip
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
#: Above this many methods a figure spreads each set's error bars sideways.
_CROWDED = 4
_GROUPS = ("many", "medium", "few")
#: Default resolution of the PNG files (the PDF copies are vector graphics).
DPI = 150
#: At most this many panels side by side; more wrap onto further rows.
MAX_COLUMNS = 4
#: Widest figure (inches) before its panels wrap onto another row (a page at 150 dpi: 2,100 px).
MAX_WIDTH = 14.0


def ordered_methods(rows: Sequence[Row]) -> list[str]:
    """The methods of ``rows``: the control first, known ones in :data:`METHOD_ORDER`, then the
    rest as seen."""
    seen: list[str] = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(str(r["method"]))
    known = [m for m in METHOD_ORDER if m in seen]
    rest = [m for m in seen if m not in known and m != CONTROL]
    return ([CONTROL] if CONTROL in seen else []) + known + rest


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


def method_style(method: str, methods: Sequence[str]) -> dict[str, Any]:
    """Colour, marker and line style of a method: fixed by :data:`METHOD_ORDER` for known
    methods (the same in every figure), by order of appearance for others; the control is grey
    and dashed."""
    if method == CONTROL:
        return {"color": "#555555", "marker": "x", "linestyle": "--"}
    if method in METHOD_ORDER:  # the same colour in every figure of every study
        return {**_style(METHOD_ORDER.index(method)), "linestyle": "-"}
    others = [m for m in methods if m != CONTROL and m not in METHOD_ORDER]
    i = others.index(method) if method in others else len(others)
    return {**_style(len(METHOD_ORDER) + i), "linestyle": "-"}


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


def panel_grid(
    n: int,
    width: float = 4.0,
    height: float = 3.4,
    sharey: bool = True,
    sharex: bool = False,
    columns: int = MAX_COLUMNS,
) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most ``columns`` per row and at most :data:`MAX_WIDTH`
    inches wide (more wrap), constrained layout; unused cells of the last row are hidden.
    Returns ``(figure, axes[:n])``."""
    n = max(n, 1)
    cols = min(n, columns, max(1, int(MAX_WIDTH // width)))
    rows = math.ceil(n / cols)
    cols = math.ceil(n / rows)  # rows as even as the count allows: 4 panels 2 + 2, not 3 + 1
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width * cols + 0.6, height * rows + 0.9),
        sharey=sharey,
        sharex=sharex,
        squeeze=False,
        layout="constrained",
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_below(fig: Any, axes: Sequence[Any], title: str | None = None) -> None:
    """One legend for the whole figure, outside and below the panels (never over data)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            title=title,
            loc="outside lower center",
            ncol=min(len(seen), 5),
            fontsize=9,
            frameon=False,
        )


def save_figure(fig: Any, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``path`` (PNG at ``dpi``) and the same figure as PDF beside it; close the figure."""
    png = Path(path)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=dpi)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)
    return png


def accuracy_source(rows: Sequence[Row]) -> str:
    """What measured the accuracies of ``rows`` (one protocol), for axis labels: the methods'
    own classifiers for protocol ``own`` (:data:`balfeat.study.cells.OWN_CLASSIFIER`), else a
    linear probe."""
    own = bool(rows) and all(str(r.get("protocol", "")) == "own" for r in rows)
    return "own-classifier" if own else "linear-probe"


def _protocol_subset(rows: Sequence[Row], protocol: str | None) -> list[Row]:
    if protocol is None:
        protocols = sorted({str(r.get("protocol", "")) for r in rows})
        protocol = protocols[0] if protocols else None
    return [r for r in rows if protocol is None or str(r.get("protocol", "")) == protocol]


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


def plot_accuracy_vs_imbalance(
    rows: Sequence[Row],
    path: str | Path,
    protocol: str | None = None,
    title: str | None = None,
    dpi: int = DPI,
) -> Path:
    """Probe top-1 accuracy (y) against the imbalance set (x), one line per method (bars: the
    rows' 95% intervals, unpaired), legend beside the axes; the control grey and dashed.

    Args:
        rows: the summary table (one row per protocol, method and set).
        path: PNG to write (a PDF is written beside it).
        protocol: the probe protocol to plot (default: the first in sorted order).
        title: figure title (default names the protocol).
        dpi: PNG resolution.

    Returns:
        The PNG path.
    """
    rows = _protocol_subset(rows, protocol)
    sets = ordered_sets(rows)
    methods = ordered_methods(rows)
    crowded = len(methods) > _CROWDED
    fig, ax = plt.subplots(figsize=(8.5, 4.6), layout="constrained")
    for i, m in enumerate(methods):
        ys = []
        for s in sets:
            match = [r for r in rows if r["method"] == m and r["set"] == s]
            ys.append(_num(match[0].get("top1")) if match else math.nan)
        lo, hi = _err(rows, m, sets, "top1", ys)
        dodge = (i - (len(methods) - 1) / 2) * (0.05 if crowded else 0.03)
        ax.errorbar(
            [x + dodge for x in range(len(sets))],
            ys,
            yerr=[lo, hi],
            linewidth=1.8,
            markersize=6,
            capsize=3,
            label=display_name(m),
            **method_style(m, methods),
        )
    ax.set_xticks(range(len(sets)))
    ax.set_xticklabels([_set_label(rows, s) for s in sets])
    ax.set_xlabel("pre-training set (more imbalanced to the right)")
    ax.set_ylabel(f"{accuracy_source(rows)} top-1 accuracy (%)")
    proto = str(rows[0].get("protocol", "")) if rows else ""
    ax.set_title(
        title or f"Probe accuracy vs. imbalance (protocol {proto}; bars: 95% CI, unpaired)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return save_figure(fig, path, dpi)
