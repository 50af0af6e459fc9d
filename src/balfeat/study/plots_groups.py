"""Group figures of a study: many/medium/few accuracy bars, balancedness measured against the
balanced set (paired by seed; the headline measures) and the raw per-set balancedness (which
includes class difficulty)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from balfeat.study.plots import (
    _GROUPS,
    DPI,
    Row,
    _err,
    _num,
    _protocol_subset,
    _set_label,
    accuracy_source,
    display_name,
    legend_below,
    method_style,
    ordered_methods,
    ordered_sets,
    panel_grid,
    save_figure,
)
from balfeat.study.plots_paired import Item, interval_panel

_GROUP_COLORS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}


def plot_shot_bars(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path:
    """Many/medium/few accuracy bars (95% interval over seeds), grouped per method, one panel
    per imbalance set (panels wrap); no value labels (the bars and intervals carry them).

    Args:
        rows: the summary table.
        path: PNG to write (a PDF beside it).
        protocol: the probe protocol to plot (default: the first in sorted order).
        dpi: PNG resolution.

    Returns:
        The PNG path.
    """
    rows = _protocol_subset(rows, protocol)
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    fig, axes = panel_grid(len(sets), width=max(3.6, 0.62 * len(methods) + 1.4), height=3.8)
    width = 0.8 / len(_GROUPS)
    for s, ax in zip(sets, axes, strict=True):
        for g_i, g in enumerate(_GROUPS):
            xs, ys = [], []
            for i, m in enumerate(methods):
                match = [r for r in rows if r["method"] == m and r["set"] == s]
                xs.append(i + (g_i - 1) * width)
                ys.append(_num(match[0].get(g)) if match else math.nan)
            lo, hi = [], []
            for m, y in zip(methods, ys, strict=True):
                a, b = _err(rows, m, [s], g, [y])
                lo.append(a[0])
                hi.append(b[0])
            ax.bar(
                xs,
                [y if math.isfinite(y) else 0.0 for y in ys],
                width=width,
                color=_GROUP_COLORS[g],
                label=g,
                yerr=[lo, hi],
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
            for x, y in zip(xs, ys, strict=True):
                if not math.isfinite(y):  # an empty group: say so at the base, not a 0 bar
                    ax.text(x, 1.0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([display_name(m) for m in methods], fontsize=8, rotation=35, ha="right")
        ax.set_title(_set_label(rows, s).replace("\n", " "), fontsize=10)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"{accuracy_source(rows)} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
    legend_below(fig, axes[:1], title="class group (fixed for the study)")
    fig.suptitle("Many / medium / few-shot accuracy (bars: 95% CI over seeds)")
    return save_figure(fig, path, dpi)


def plot_paired_balancedness(
    findings: Mapping[str, Any], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """The headline balancedness: per long-tailed set, the slope of each class's change from
    the balanced set against ln(count), the many/medium/few changes and the std of those changes
    (SDCLR's measure), each paired by seed with its 95% interval.

    Returns:
        The PNG path, or ``None`` without paired measures.
    """
    entries = [
        e for e in findings.get("paired_balancedness") or [] if protocol in (None, e["protocol"])
    ]
    if not entries:
        return None
    protocol = protocol or str(entries[0]["protocol"])
    entries = [e for e in entries if e["protocol"] == protocol]
    methods = ordered_methods([{"method": e["method"]} for e in entries])
    sets = list(dict.fromkeys(str(e["set"]) for e in entries))
    base = entries[0].get("baseline", "balanced")
    has_slope = any(e.get("slope") for e in entries)
    cols = 3 if has_slope else 2
    fig, axes = panel_grid(
        cols * len(sets),
        width=4.2,
        height=0.42 * len(methods) * 1.6 + 1.4,
        sharey=False,
        columns=cols,
    )
    k = 0
    for s in sets:
        cell = {e["method"]: e for e in entries if e["set"] == s}

        def items(key: str, cell: Mapping[str, Any] = cell) -> list[Item]:
            return [
                (display_name(m), (cell.get(m) or {}).get(key), method_style(m, methods)["color"])
                for m in methods
            ]

        if has_slope:
            interval_panel(
                axes[k],
                items("slope"),
                f"slope of change vs ln(count), {s}",
                "points per ln(count)",
            )
            k += 1
        _group_panel(axes[k], cell, methods, f"group change, {base} → {s}")
        k += 1
        interval_panel(
            axes[k],
            items("group_std"),
            f"std of group changes (SDCLR), {s}",
            "points (>= 0 by construction)",
            mark_findings=False,
        )
        k += 1
    legend_below(fig, axes, title="class group (the paper's many/medium/few)")
    fig.suptitle(
        f"Balancedness against the same method's {base}-set run, paired by seed\n"
        f"(protocol {protocol}; bars: 95% CI; filled dot: the interval excludes 0)"
    )
    return save_figure(fig, path, dpi)


def _group_panel(ax: Any, cell: Mapping[str, Any], methods: Sequence[str], title: str) -> None:
    """Many/medium/few changes per method: three offset intervals per line."""
    n = len(methods)
    for g_i, g in enumerate(_GROUPS):
        for k, m in enumerate(methods):
            iv = (cell.get(m) or {}).get(g)
            if not iv or iv.get("low") is None:
                continue
            y = n - 1 - k + (1 - g_i) * 0.22
            mean, low, high = iv["mean"], iv["low"], iv["high"]
            found = low > 0 or high < 0
            ax.errorbar(
                [mean],
                [y],
                xerr=[[mean - low], [high - mean]],
                fmt="o",
                color=_GROUP_COLORS[g],
                markerfacecolor=_GROUP_COLORS[g] if found else "white",
                markersize=5,
                capsize=2,
                linewidth=1.2,
            )
    for g in _GROUPS:  # legend entries (filled), whatever the first method's markers are
        ax.plot([], [], "o", color=_GROUP_COLORS[g], label=g)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([display_name(m) for m in reversed(methods)], fontsize=9)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("points (paired by seed)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)


def plot_balancedness(
    rows: Sequence[Row], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path:
    """The raw per-set balancedness, labelled as including class difficulty: std of the
    many/medium/few accuracies (left) and the slope of per-class accuracy against ln(count)
    (right), per method and set (bars: 95% interval over seeds).

    Both are computed from one set's accuracies alone, so a class that is hard (whatever its
    count) moves them: on Fashion-MNIST they sit near 14 and -8 even after balanced pre-training.
    The paired measures of :func:`plot_paired_balancedness` remove that.
    """
    rows = _protocol_subset(rows, protocol)
    methods = ordered_methods(rows)
    sets = ordered_sets(rows)
    fig, axes = panel_grid(2, width=5.2, height=3.8, sharey=False)
    specs = [
        ("group_std", "raw std of many/medium/few accuracy"),
        ("slope", "raw slope of accuracy vs. ln(count)"),
    ]
    width = 0.8 / max(len(methods), 1)
    for ax, (key, ylabel) in zip(axes, specs, strict=True):
        for i, m in enumerate(methods):
            ys = []
            for s in sets:
                match = [r for r in rows if r["method"] == m and r["set"] == s]
                ys.append(_num(match[0].get(key)) if match else math.nan)
            lo, hi = _err(rows, m, sets, key, ys)
            xs = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(sets))]
            ax.bar(
                xs,
                [y if math.isfinite(y) else 0.0 for y in ys],
                width=width,
                color=method_style(m, methods)["color"],
                label=display_name(m),
                yerr=[lo, hi],
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels([_set_label(rows, s) for s in sets], fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("group std (raw, includes class difficulty)", fontsize=10)
    axes[1].set_title("head-bias slope (raw, includes class difficulty)", fontsize=10)
    legend_below(fig, axes[:1])
    fig.suptitle("Raw per-set balancedness: not the headline (class difficulty included)")
    return save_figure(fig, path, dpi)
