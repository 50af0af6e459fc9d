"""Figures of the paired comparisons a study's finding rests on: each method's change from the
balanced set to every long-tailed set and the differences of those changes between methods, and
each method's gain over the untrained control. Drawn as interval plots (a dot for the mean, a
bar for the 95% interval over seeds, filled when the interval excludes 0); inputs are the lists
of :func:`balfeat.study.summary.findings`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from balfeat.study.plots import (
    DPI,
    display_name,
    method_style,
    ordered_methods,
    panel_grid,
    save_figure,
)

#: One line of an interval plot: label, ``Interval.as_dict()`` (or None), colour.
Item = tuple[str, Mapping[str, Any] | None, str]


def interval_panel(
    ax: Any, items: Sequence[Item], title: str, xlabel: str, mark_findings: bool = True
) -> None:
    """Draw ``items`` top to bottom on ``ax``: mean and 95% interval per line, 0 marked.

    With ``mark_findings`` a filled dot is an interval that excludes 0 (a finding at 95%) and an
    open dot one that does not (leave it off for measures that are >= 0 by construction); a
    cross at the mean is a single seed (no interval).
    """
    n = len(items)
    for k, (_, iv, color) in enumerate(items):
        y = n - 1 - k
        if not iv or iv.get("mean") is None:
            continue
        mean, low, high = float(iv["mean"]), iv.get("low"), iv.get("high")
        if low is None or high is None:
            ax.plot([mean], [y], marker="x", color=color, markersize=7)
            continue
        found = low > 0 or high < 0 or not mark_findings
        ax.errorbar(
            [mean],
            [y],
            xerr=[[mean - low], [high - mean]],
            fmt="o",
            color=color,
            markerfacecolor=color if found else "white",
            markersize=6,
            capsize=3,
            linewidth=1.5,
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([it[0] for it in reversed(items)], fontsize=9)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)


def _methods(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return ordered_methods([{"method": e["method"]} for e in entries])


def _sets(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for e in entries:
        if e["set"] not in out:
            out.append(str(e["set"]))
    return out


def _save_panels(
    panels: Sequence[tuple[str, list[Item]]],
    title: str,
    xlabel: str,
    path: str | Path,
    dpi: int,
    columns: int = 2,
) -> Path:
    tallest = max(len(items) for _, items in panels)
    fig, axes = panel_grid(
        len(panels), width=4.4, height=0.42 * tallest + 1.3, sharey=False, columns=columns
    )
    for ax, (name, items) in zip(axes, panels, strict=True):
        interval_panel(ax, items, name, xlabel)
    single = any(iv and iv.get("low") is None for _, its in panels for _, iv, _ in its)
    fig.suptitle(title + ("\n(×: one seed, no interval)" if single else ""))
    return save_figure(fig, path, dpi)


def plot_paired_changes(
    findings: Mapping[str, Any], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """One panel per comparison: each method's change from the balanced set to a long-tailed
    set (paired by seed), then the differences of those changes between methods.

    Args:
        findings: :func:`balfeat.study.summary.findings` (``changes``, ``differences``,
            ``baseline``).
        path: PNG to write (a PDF beside it).
        protocol: the protocol to draw (default: the first with changes).
        dpi: PNG resolution.

    Returns:
        The PNG path, or ``None`` without paired changes.
    """
    changes = [c for c in findings.get("changes") or [] if protocol in (None, c["protocol"])]
    if not changes:
        return None
    protocol = protocol or str(changes[0]["protocol"])
    changes = [c for c in changes if c["protocol"] == protocol]
    diffs = [d for d in findings.get("differences") or [] if d["protocol"] == protocol]
    base = findings.get("baseline", "balanced")
    methods = _methods(changes)
    panels: list[tuple[str, list[Item]]] = []
    for s in _sets(changes):
        items: list[Item] = []
        for m in methods:
            iv = next((c["interval"] for c in changes if c["method"] == m and c["set"] == s), None)
            items.append((display_name(m), iv, method_style(m, methods)["color"]))
        panels.append((f"change, {base} → {s}", items))
        pairs = [d for d in diffs if d["set"] == s]
        if pairs:
            panels.append(
                (
                    f"differences of changes, → {s}",
                    [
                        (
                            f"{display_name(d['a'])} − {display_name(d['b'])}",
                            d["interval"],
                            "#333333",
                        )
                        for d in pairs
                    ],
                )
            )
    return _save_panels(
        panels,
        f"Paired changes of top-1 accuracy (protocol {protocol}; filled: 95% CI excludes 0)",
        "points (paired by seed, 95% CI)",
        path,
        dpi,
    )


def plot_control_gains(
    findings: Mapping[str, Any], path: str | Path, protocol: str | None = None, dpi: int = DPI
) -> Path | None:
    """Each method's gain over the untrained control, one panel per pre-training set.

    Returns:
        The PNG path, or ``None`` when the study has no control rows.
    """
    gains = [g for g in findings.get("control_gains") or [] if protocol in (None, g["protocol"])]
    if not gains:
        return None
    protocol = protocol or str(gains[0]["protocol"])
    gains = [g for g in gains if g["protocol"] == protocol]
    methods = _methods(gains)
    panels: list[tuple[str, list[Item]]] = []
    for s in _sets(gains):
        items: list[Item] = []
        for m in methods:
            iv = next((g["interval"] for g in gains if g["method"] == m and g["set"] == s), None)
            items.append((display_name(m), iv, method_style(m, methods)["color"]))
        panels.append((f"gain over the control, {s}", items))
    return _save_panels(
        panels,
        f"What pre-training added: gain over the untrained network (protocol {protocol})",
        "points of top-1 (paired by seed, 95% CI)",
        path,
        dpi,
        columns=len(panels),
    )
