"""The online kNN monitor of a study's pre-training runs: one panel per method (panels wrap),
one colour per pre-training set, the mean over seeds as a line and its spread (± 1 sd over
seeds) as a band, method display names in the titles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from balfeat.study.plots import (
    DPI,
    _style,
    display_name,
    legend_below,
    ordered_methods,
    panel_grid,
    save_figure,
)

#: ``{method: {set: {seed: [(epoch, knn top-1), ...]}}}``.
Curves = dict[str, dict[str, dict[str, list[tuple[float, float]]]]]


def read_knn_curves(study_dir: str | Path) -> Curves:
    """The ``knn_top1`` lines of every ``cells/<method>__<set>/seed<k>/pretrain/metrics.jsonl``."""
    curves: Curves = {}
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
            method, _, set_name = cell.partition("__")
            curves.setdefault(method, {}).setdefault(set_name or "-", {})[seed] = pts
    return curves


def plot_knn_curves(study_dir: str | Path, path: str | Path, dpi: int = DPI) -> Path | None:
    """Online kNN accuracy against epoch, small multiples per method (mean ± sd over seeds per
    set); ``None`` when no cell logged any.

    Args:
        study_dir: the study's output folder (holding ``cells/``).
        path: PNG to write (a PDF beside it).
        dpi: PNG resolution.
    """
    curves = read_knn_curves(study_dir)
    if not curves:
        return None
    methods = ordered_methods([{"method": m} for m in curves])
    sets = list(dict.fromkeys(s for m in methods for s in curves[m]))
    fig, axes = panel_grid(len(methods), width=3.6, height=2.9)
    for m, ax in zip(methods, axes, strict=True):
        for i, s in enumerate(sets):
            runs = list(curves[m].get(s, {}).values())
            if not runs:
                continue
            epochs = sorted({e for run in runs for e, _ in run})
            table = np.full((len(runs), len(epochs)), np.nan)
            for r, run in enumerate(runs):
                for e, v in run:
                    table[r, epochs.index(e)] = v
            mean = np.nanmean(table, axis=0)
            color = _style(i)["color"]
            ax.plot(epochs, mean, color=color, linewidth=1.6, label=s)
            if len(runs) > 1:
                sd = np.nanstd(table, axis=0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)
        ax.set_title(display_name(m), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.5
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("kNN top-1 (%)")
        ax.grid(True, alpha=0.3)
    legend_below(fig, axes, title="pre-training set (line: mean over seeds; band: ± 1 sd)")
    fig.suptitle("Online kNN monitor during pre-training")
    return save_figure(fig, path, dpi)
