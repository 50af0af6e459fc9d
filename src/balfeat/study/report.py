"""The report of a study: results table (CSV + Markdown), figures, ``report.md`` and a standalone
``report.html``.

A *results table* is a list of rows, one per (method, imbalance set, protocol) cell; see
:mod:`balfeat.study.plots` for the keys. :func:`row_from_results` builds a row from the
``results.json`` dict of a probe (:func:`balfeat.evaluation.metrics.evaluate` output).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from balfeat.study import plots

Row = dict[str, Any]

#: Scalar columns of the CSV / Markdown table, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "method",
    "set",
    "imbalance_ratio",
    "train_images",
    "protocol",
    "top1",
    "many",
    "medium",
    "few",
    "group_std",
    "slope",
)


def row_from_results(
    results: Mapping[str, Any],
    method: str,
    set_name: str,
    imbalance_ratio: float,
    protocol: str,
    **extra: Any,
) -> Row:
    """One results-table row from a probe's ``results.json`` dict.

    Args:
        results: output of :func:`balfeat.evaluation.metrics.evaluate` (``top1``, ``many``,
            ``medium``, ``few``, ``balancedness``, ``per_class``).
        method: method id (``sl``, ``moco_v2``, ``kcl``...).
        set_name: name of the pre-training set (``LT0``, ``exp100``...).
        imbalance_ratio: n_max / n_min of the pre-training set (1 = balanced).
        protocol: probe protocol (``fast``, ``reference``...).
        **extra: further columns (e.g. ``cell``, ``seconds``).
    """
    bal = results.get("balancedness") or {}
    per_class = results.get("per_class") or []
    row: Row = {
        "method": method,
        "set": set_name,
        "imbalance_ratio": float(imbalance_ratio),
        "protocol": protocol,
        "top1": results.get("top1"),
        "many": results.get("many"),
        "medium": results.get("medium"),
        "few": results.get("few"),
        "group_std": bal.get("group_std") if isinstance(bal, Mapping) else None,
        "slope": bal.get("slope") if isinstance(bal, Mapping) else None,
        "train_counts": [int(p.get("train_count", 0)) for p in per_class],
        "per_class_accuracy": [p.get("accuracy") for p in per_class],
        "class_names": [str(p.get("name", p.get("class", ""))) for p in per_class],
    }
    row["train_images"] = int(sum(row["train_counts"]))
    row.update(extra)
    return row


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.2f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _columns(rows: Sequence[Row]) -> list[str]:
    cols = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
    return cols


def table_csv(rows: Sequence[Row]) -> str:
    """The scalar columns of the results table as CSV text (empty cell for ``None``)."""
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        out = []
        for c in cols:
            v = r.get(c)
            out.append("" if v is None else (f"{v:.4f}" if isinstance(v, float) else v))
        w.writerow(out)
    return buf.getvalue()


def table_markdown(rows: Sequence[Row]) -> str:
    """The scalar columns of the results table as a Markdown table (``n/a`` for ``None``)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def summary_text(rows: Sequence[Row]) -> str:
    """A fixed-width summary (one line per cell) for printing on the terminal."""
    header = (
        f"{'method':<10} {'set':<10} {'ratio':>6} {'top1':>7} {'many':>7} {'medium':>7} {'few':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['method']!s:<10.10} {r['set']!s:<10.10} "
            f"{_fmt(r.get('imbalance_ratio')):>6} {_fmt(r.get('top1')):>7} "
            f"{_fmt(r.get('many')):>7} {_fmt(r.get('medium')):>7} {_fmt(r.get('few')):>7}"
        )
    return "\n".join(lines)


def _sort_rows(rows: Sequence[Row]) -> list[Row]:
    methods = plots.ordered_methods(rows)
    sets = plots.ordered_sets(rows)
    return sorted(
        rows,
        key=lambda r: (
            str(r.get("protocol", "")),
            methods.index(str(r["method"])),
            sets.index(str(r["set"])),
        ),
    )


def write_report(
    rows: Sequence[Row],
    out_dir: str | Path,
    title: str = "balfeat study",
    description: str = "",
) -> dict[str, Path]:
    """Write the results table, the figures and the report of a study into ``out_dir``.

    Files: ``results.csv``, ``results.md``, ``figures/*.png``, ``report.md`` and
    ``report.html`` (standalone apart from the PNGs it links in ``figures/``).

    Args:
        rows: the results table (one row per cell).
        out_dir: directory, created if missing.
        title: report title.
        description: Markdown paragraph(s) placed under the title (setup, protocol notes).

    Returns:
        ``{"csv", "markdown", "report", "html", <figure names>...}`` -> paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _sort_rows(rows)
    paths: dict[str, Path] = {}
    paths["csv"] = out / "results.csv"
    paths["csv"].write_text(table_csv(rows))
    md_table = table_markdown(rows)
    paths["markdown"] = out / "results.md"
    paths["markdown"].write_text(md_table)
    figures = plots.plot_all(rows, out / "figures") if rows else {}
    paths.update(figures)

    captions = {
        "accuracy_vs_imbalance": "Linear-probe accuracy as the pre-training set gets more "
        "imbalanced (one line per method). A flat line is a representation that is robust to "
        "the imbalance.",
        "per_class_vs_count": "Per-class accuracy against the class's pre-training count.",
        "per_class_change_vs_count": "Per-class accuracy minus the same class's accuracy when "
        "the method pre-trains on the balanced set (removes how hard each class is): points "
        "below 0 on the left are rare classes the imbalance hurt.",
        "shot_accuracy": "Many / medium / few-shot accuracy, groups by pre-training counts.",
        "balancedness": "Balancedness: spread of the group accuracies and head bias.",
    }
    md = [f"# {title}", ""]
    if description:
        md += [description.strip(), ""]
    md += ["## Results", "", md_table, "Also as CSV: [results.csv](results.csv).", ""]
    md += ["## Figures", ""]
    for name, p in figures.items():
        base = name.split("_fast")[0].split("_reference")[0]
        md += [f"### {name.replace('_', ' ')}", "", f"![{name}](figures/{p.name})", ""]
        if base in captions:
            md += [captions[base], ""]
    paths["report"] = out / "report.md"
    paths["report"].write_text("\n".join(md))

    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f0f0f0}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if description:
        for para in description.strip().split("\n\n"):
            h.append(f"<p>{html.escape(para)}</p>")
    cols = _columns(rows)
    h.append("<h2>Results</h2><table><tr>")
    h += [f"<th>{html.escape(c)}</th>" for c in cols]
    h.append("</tr>")
    for r in rows:
        h.append(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        )
    h.append('</table><p>Also as CSV: <a href="results.csv">results.csv</a>.</p><h2>Figures</h2>')
    for name, p in figures.items():
        base = name.split("_fast")[0].split("_reference")[0]
        h.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>")
        h.append(f'<img src="figures/{html.escape(p.name)}" alt="{html.escape(name)}">')
        if base in captions:
            h.append(f"<p>{html.escape(captions[base])}</p>")
    h.append("</body></html>")
    paths["html"] = out / "report.html"
    paths["html"].write_text("\n".join(h) + "\n")
    return paths
