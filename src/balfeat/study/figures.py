"""Every figure of a study, drawn by one call (:func:`plot_all`): the figure modules
(:mod:`balfeat.study.plots` and its ``plots_*`` siblings) know nothing of each other's files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balfeat.study import plots_groups, plots_paired, plots_per_class
from balfeat.study.plots import DPI, Row, plot_accuracy_vs_imbalance


def plot_all(
    rows: Sequence[Row],
    out_dir: str | Path,
    findings: dict[str, Any] | None = None,
    dpi: int = DPI,
) -> dict[str, Path]:
    """Write every figure of a study into ``out_dir`` (PNG + PDF); returns ``{name: png path}``.

    Args:
        rows: the summary table (one row per protocol, method and set).
        out_dir: figure folder.
        findings: :func:`balfeat.study.summary.findings` of the per-seed rows: the paired
            figures (changes, gains over the control, balancedness) need it; without it they
            are left out.
        dpi: PNG resolution.

    With several probe protocols, each figure is drawn once per protocol (file name suffix
    ``_<protocol>``); with one, the file names carry no suffix.
    """
    out = Path(out_dir)
    protocols = sorted({str(r.get("protocol", "")) for r in rows})
    figures: dict[str, Path] = {}
    for p in protocols:
        sfx = f"_{p}" if len(protocols) > 1 else ""
        drawn: dict[str, Path | None] = {}
        if findings is not None:
            drawn["paired_changes"] = plots_paired.plot_paired_changes(
                findings, out / f"paired_changes{sfx}.png", protocol=p, dpi=dpi
            )
            drawn["gain_over_control"] = plots_paired.plot_control_gains(
                findings, out / f"gain_over_control{sfx}.png", protocol=p, dpi=dpi
            )
        drawn["accuracy_vs_imbalance"] = plot_accuracy_vs_imbalance(
            rows, out / f"accuracy_vs_imbalance{sfx}.png", protocol=p, dpi=dpi
        )
        drawn["per_class_vs_count"] = plots_per_class.plot_per_class_vs_count(
            rows, out / f"per_class_vs_count{sfx}.png", protocol=p, dpi=dpi
        )
        drawn["per_class_change_vs_count"] = plots_per_class.plot_per_class_change_vs_count(
            rows, out / f"per_class_change_vs_count{sfx}.png", protocol=p, dpi=dpi
        )
        drawn["shot_accuracy"] = plots_groups.plot_shot_bars(
            rows, out / f"shot_accuracy{sfx}.png", protocol=p, dpi=dpi
        )
        if findings is not None:
            drawn["balancedness"] = plots_groups.plot_paired_balancedness(
                findings, out / f"balancedness{sfx}.png", protocol=p, dpi=dpi
            )
        drawn["balancedness_raw"] = plots_groups.plot_balancedness(
            rows, out / f"balancedness_raw{sfx}.png", protocol=p, dpi=dpi
        )
        figures.update({f"{k}{sfx}": v for k, v in drawn.items() if v is not None})
    return figures
