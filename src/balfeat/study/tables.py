"""Markdown tables of a study's paired statistics: gains over the control, balancedness measured
against the balanced set (paired by seed), and the raw per-set balancedness that still carries
class difficulty. Inputs are the lists of :func:`balfeat.study.summary.findings`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from balfeat.study.plots import display_name
from balfeat.study.summary import SOURCES

Row = dict[str, Any]


def interval_text(iv: Mapping[str, Any] | None) -> str:
    """``+m [lo, hi]`` of an interval dict (``+m`` alone with one seed, ``n/a`` without)."""
    if not iv or not isinstance(iv.get("mean"), (int, float)) or not math.isfinite(iv["mean"]):
        return "n/a"
    if iv.get("low") is None or iv.get("high") is None:
        return f"{iv['mean']:+.2f}"
    return f"{iv['mean']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _who(entry: Mapping[str, Any], several: bool) -> list[str]:
    cells = [str(entry.get("protocol", ""))] if several else []
    return [*cells, display_name(str(entry["method"])), str(entry["set"])]


def _several(entries: Sequence[Mapping[str, Any]]) -> bool:
    return len({str(e.get("protocol", "")) for e in entries}) > 1


def control_gains_markdown(gains: Sequence[Row]) -> str:
    """Each method's gain over the untrained control per set (points, mean [95% interval]),
    with the MDE of each comparison; empty string without gains."""
    if not gains:
        return ""
    several = _several(gains)
    head = [
        *(["protocol"] if several else []),
        "method",
        "set",
        "gain over control",
        "seeds",
        "MDE",
    ]
    body = [
        [
            *_who(g, several),
            interval_text(g["interval"]),
            str(g["interval"]["n"]),
            f"{g['sizing']['mde']:.2f}" if g.get("sizing") else "n/a",
        ]
        for g in gains
    ]
    return _table(head, body)


def paired_balancedness_markdown(entries: Sequence[Row]) -> str:
    """Balancedness against the same method's balanced-set run, paired by seed: change slope,
    many/medium/few changes and the std of those changes (mean [95% interval] over seeds)."""
    if not entries:
        return ""
    several = _several(entries)
    head = [
        *(["protocol"] if several else []),
        "method",
        "set",
        "slope of change vs ln(count)",
        "many change",
        "medium change",
        "few change",
        "group std of changes",
    ]
    body = [
        [
            *_who(e, several),
            *(interval_text(e.get(k)) for k in ("slope", "many", "medium", "few", "group_std")),
        ]
        for e in entries
    ]
    return _table(head, body)


def sources_lines() -> list[str]:
    """Where each paired measure comes from, one bullet each."""
    return [
        f"- slope of change: {SOURCES['slope']}.",
        f"- many/medium/few change: {SOURCES['many']}.",
        f"- group std of changes: {SOURCES['group_std']}.",
    ]


def raw_balancedness_markdown(summary: Sequence[Row]) -> str:
    """The raw per-set balancedness (group std and slope of accuracy itself against ln(count);
    mean ± 95% half-width). Labelled: it includes class difficulty."""
    rows = [r for r in summary if r.get("group_std") is not None or r.get("slope") is not None]
    if not rows:
        return ""
    several = _several(rows)
    head = [
        *(["protocol"] if several else []),
        "method",
        "set",
        "raw group std (includes class difficulty)",
        "raw slope (includes class difficulty)",
    ]
    body = [[*_who(r, several), _pm(r, "group_std"), _pm(r, "slope")] for r in rows]
    return _table(head, body)


def _pm(r: Mapping[str, Any], m: str) -> str:
    v = r.get(m)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "n/a"
    ci = r.get(f"{m}_ci")
    if ci and ci[0] is not None and ci[1] is not None:
        return f"{v:.2f} ± {(ci[1] - ci[0]) / 2:.2f}"
    return f"{v:.2f}"


#: A report section: heading, paragraphs (Markdown lines), table (Markdown, may be empty).
Section = tuple[str, list[str], str]


def statistics_sections(findings: Mapping[str, Any], summary: Sequence[Row]) -> list[Section]:
    """The report's sections after the results table: gains over the control, balancedness
    against the balanced set (paired), what the study can detect, raw balancedness."""
    from balfeat.evaluation.statistics import MDE_FORMULA

    out: list[Section] = []
    gains = findings.get("control_gains") or []
    if gains:
        out.append(
            (
                "Gain over the untrained control (paired by seed)",
                [
                    "Each method's top-1 minus the untrained network's (same architecture, "
                    "BatchNorm statistics adapted on the set, same probe), same set and seed; "
                    "mean [95% interval]. MDE: minimum detectable effect of that comparison."
                ],
                control_gains_markdown(gains),
            )
        )
    paired = findings.get("paired_balancedness") or []
    if paired:
        notes = [
            "Each measure is the change from the same method's run on the balanced set with the "
            "same seed, so how hard a class is cancels; mean [95% interval over seeds], points. "
            "These are the balancedness measures to read:",
            *sources_lines(),
        ]
        if not any(e.get("slope") for e in paired):
            notes.append(
                "The slope of change is n/a here: it needs each seed's per-class accuracies "
                "(results.jsonl), which the rows this report was drawn from do not have."
            )
        out.append(
            (
                "Balancedness against the balanced set (paired by seed)",
                notes,
                paired_balancedness_markdown(paired),
            )
        )
    if findings.get("changes"):
        out.append(
            (
                "How large an effect this study can detect",
                [
                    f"{MDE_FORMULA}. The seeds for ±1 point are the least n with "
                    "t(0.975, n-1)·sd/sqrt(n) <= 1. Each comparison's values are listed under "
                    "Finding; the sd comes from the study's own seeds and is itself uncertain "
                    "with few seeds, so read them as orders of magnitude. A difference is called "
                    "a finding only when its 95% interval excludes zero."
                ],
                "",
            )
        )
    raw = raw_balancedness_markdown(summary)
    if raw:
        out.append(
            (
                "Raw per-set balancedness (includes class difficulty)",
                [
                    "Computed from one set's accuracies alone (SDCLR's group std of the "
                    "many/medium/few accuracies; slope of per-class accuracy against ln(count) "
                    "of that set). Both also measure which classes are hard, whatever their "
                    "count, and are far from 0 even after balanced pre-training: kept for "
                    "reference, not the headline. Mean ± 95% half-width over seeds."
                ],
                raw,
            )
        )
    return out
