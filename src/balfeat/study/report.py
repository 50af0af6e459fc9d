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

from balfeat.study import figures, plots

Row = dict[str, Any]

#: Scalar columns of the CSV / Markdown table, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "method",
    "set",
    "imbalance_ratio",
    "train_images",
    "protocol",
    "seed",
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
        "groups": results.get("groups"),
        "group_source": results.get("group_source"),
        "knn_seconds": results.get("knn_seconds"),
        "cell_seconds": results.get("cell_seconds"),
    }
    row["train_images"] = int(sum(row["train_counts"]))
    row.update(extra)
    return row


def read_rows(study_dir: str | Path) -> list[Row]:
    """The results table of a written report, to redraw it: ``results.jsonl`` (every field,
    per-class accuracies included) when present, else the scalar columns of ``results.csv``
    (then the per-class figures and the per-class slope are left out)."""
    import json

    d = Path(study_dir)
    full = d / "results.jsonl"
    if full.is_file():
        return [json.loads(ln) for ln in full.read_text().splitlines() if ln.strip()]
    with (d / "results.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    rows: list[Row] = []
    for rec in table:
        row: Row = {}
        for k, v in rec.items():
            if k in ("method", "set", "protocol"):
                row[k] = v
            elif v == "":
                row[k] = None
            elif k in ("seed", "train_images"):
                row[k] = int(float(v))
            else:
                row[k] = float(v)
        rows.append(row)
    return rows


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
    """The scalar columns of the results table as a Markdown table (``n/a`` for ``None``), each
    method by its display name (the CSV keeps the ids a user types)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [plots.display_name(str(r[c])) if c == "method" else _fmt(r.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_text(rows: Sequence[Row]) -> str:
    """A fixed-width summary for the terminal: one line per (protocol, method, set), mean ± 95%
    half-width over seeds, and the headline sentences."""
    from balfeat.study.summary import findings, headline, summarise

    summary = _sort_rows(summarise(rows))
    names = {str(r["method"]): plots.display_name(str(r["method"])) for r in summary}
    w = max([6, *(len(n) for n in names.values())])
    header = (
        f"{'method':<{w}} {'set':<10} {'ratio':>6} {'seeds':>5} {'top1':>13} {'many':>13} "
        f"{'medium':>13} {'few':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in summary:
        lines.append(
            f"{names[str(r['method'])]:<{w}} {r['set']!s:<10.10} "
            f"{_fmt(r.get('imbalance_ratio')):>6} {r.get('n_seeds', 1):>5} "
            + " ".join(f"{_ci_text(r, m):>13}" for m in ("top1", "many", "medium", "few"))
        )
    lines += ["", *headline(findings(rows))]
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


def _ci_text(r: Row, m: str) -> str:
    """``mean ± half-width`` of a summary row's metric (``mean`` alone without an interval)."""
    v = r.get(m)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "n/a"
    ci = r.get(f"{m}_ci")
    if ci and ci[0] is not None and ci[1] is not None:
        return f"{v:.2f} ± {(ci[1] - ci[0]) / 2:.2f}"
    return f"{v:.2f}"


#: Columns of the summary table (mean ± 95% half-width over seeds). The raw per-set ``group_std``
#: and ``slope`` carry class difficulty: they have their own, labelled table
#: (:func:`balfeat.study.tables.raw_balancedness_markdown`).
SUMMARY_METRICS: tuple[str, ...] = ("top1", "many", "medium", "few")


def summary_markdown(summary: Sequence[Row]) -> str:
    """The summary table (one row per protocol, method and set; mean ± 95% half-width)."""
    cols = ["protocol", "method", "set", "ratio", "seeds", *SUMMARY_METRICS, "interval"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in summary:
        cells = [
            str(r.get("protocol", "")),
            plots.display_name(str(r["method"])),
            str(r["set"]),
            _fmt(r.get("imbalance_ratio")),
            str(r.get("n_seeds", 1)),
            *[_ci_text(r, m) for m in SUMMARY_METRICS],
            str(r.get("top1_ci_method", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def groups_text(rows: Sequence[Row], class_names: Sequence[str] | None = None) -> list[str]:
    """Sentences naming the classes of each many/medium/few group (fixed for the study)."""
    if not rows or not (rows[0].get("groups") or rows[0].get("group_source")):
        return []  # rows read back from results.csv carry no group definitions
    r0 = rows[0]
    groups = r0.get("groups") or {}
    names = list(class_names or r0.get("class_names") or [])
    out = []
    source = r0.get("group_source")
    if source:
        out.append(f"Many/medium/few groups are the same in every row: fixed by the {source}.")
    for g in ("many", "medium", "few"):
        info = groups.get(g) or []
        members = info.get("classes", []) if isinstance(info, Mapping) else list(info)
        if members:
            label = ", ".join(names[c] if c < len(names) else str(c) for c in members)
            out.append(f"- {g}: {label}")
        else:
            out.append(f"- {g}: (no class)")
    return out


def write_report(
    rows: Sequence[Row],
    out_dir: str | Path,
    title: str = "balfeat study",
    description: str = "",
    class_names: Sequence[str] | None = None,
    published: bool = False,
    dpi: int | None = None,
    method_names: Sequence[str] | None = None,
    published_datasets: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write the tables, the figures and the report of a study into ``out_dir``.

    Files: ``results.csv``/``results.md`` (one row per cell, seed and probe; scalar columns),
    ``results.jsonl`` (the same rows with every field, per-class accuracies included: what
    :func:`read_rows` redraws a report from), ``summary.md`` (mean ± 95% half-width over seeds),
    ``changes.json`` (:func:`balfeat.study.summary.findings`: paired changes, their differences,
    gains over the control, paired balancedness, minimum detectable effects),
    ``figures/*.png`` + ``*.pdf``, ``report.md`` and ``report.html`` (the figures embedded).
    The report leads with the sentences of :func:`balfeat.study.summary.headline`.

    Args:
        rows: the results table (one row per cell, seed and probe).
        out_dir: directory, created if missing.
        title: report title.
        description: Markdown paragraph(s) placed under the title (setup, protocol notes).
        class_names: names of the classes (for the group definitions).
        published: add the published numbers of the study's methods
            (:func:`balfeat.study.published.published_markdown`) after the results.
        dpi: resolution of the PNG figures (default :data:`balfeat.study.plots.DPI`; the PDF
            copies are vector graphics).
        method_names: what the study's methods train (their ``method.name``), which the
            published rows are matched by; default: the rows' method ids.
        published_datasets: the published table's names of the data the cells train on
            (:func:`balfeat.study.published.study_trains`); ``None``: any dataset.

    Returns:
        ``{"csv", "markdown", "summary", "changes", "report", "html", <figure names>...}`` ->
        paths.
    """
    import base64
    import json

    from balfeat.atomic import atomic_write_text
    from balfeat.study import tables
    from balfeat.study.plots_knn import plot_knn_curves
    from balfeat.study.summary import findings, headline, summarise

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dpi = dpi or plots.DPI
    rows = _sort_rows(rows)
    summary = _sort_rows(summarise(rows)) if rows else []
    changes = findings(rows) if rows else {"changes": [], "differences": []}
    lead = headline(changes) if rows else ["No results yet."]
    paths: dict[str, Path] = {}
    paths["csv"] = out / "results.csv"
    atomic_write_text(paths["csv"], table_csv(rows))
    md_table = table_markdown(rows)
    paths["markdown"] = out / "results.md"
    atomic_write_text(paths["markdown"], md_table)
    paths["rows"] = out / "results.jsonl"
    atomic_write_text(paths["rows"], "".join(json.dumps(r, default=str) + "\n" for r in rows))
    sum_md = summary_markdown(summary)
    paths["summary"] = out / "summary.md"
    atomic_write_text(paths["summary"], sum_md)
    paths["changes"] = out / "changes.json"
    atomic_write_text(paths["changes"], json.dumps(changes, indent=2) + "\n")
    drawn = figures.plot_all(summary, out / "figures", findings=changes, dpi=dpi) if summary else {}
    knn = plot_knn_curves(out, out / "figures" / "knn_monitor.png", dpi=dpi)
    if knn is not None:
        drawn["knn_monitor"] = knn
    paths.update(drawn)

    captions = {
        "paired_changes": "Each method's change of top-1 from the balanced pre-training set to "
        "each long-tailed set, and the differences of those changes between methods, paired by "
        "seed (dot: mean; bar: 95% t-interval; filled: the interval excludes 0, a finding).",
        "gain_over_control": "Each method's top-1 minus the untrained network's on the same set "
        "and seed: what pre-training added (95% t-interval; filled: excludes 0).",
        "accuracy_vs_imbalance": "Linear-probe accuracy as the pre-training set gets more "
        "imbalanced (one line per method; bars: 95% interval of each row over seeds, not "
        "paired; the paired changes figure is the comparison).",
        "per_class_vs_count": "Per-class accuracy (mean over seeds) against the class's "
        "pre-training count.",
        "per_class_change_vs_count": "Per-class accuracy minus the same class's accuracy when "
        "the method pre-trains on the balanced set (removes how hard each class is); means "
        "over seeds without intervals: the slope of change, with its interval, is in the "
        "balancedness table.",
        "shot_accuracy": "Many / medium / few-shot accuracy (bars: 95% interval over seeds); "
        "the groups are fixed for the whole study.",
        "balancedness": "Balancedness against the same method's balanced-set run, paired by "
        "seed: slope of each class's change against ln(count), the many/medium/few changes "
        "and their std (SDCLR's measure); 95% intervals.",
        "balancedness_raw": "Raw per-set balancedness (group std and slope of accuracy itself "
        "against ln(count)): includes class difficulty, so it is far from 0 even on the "
        "balanced set; not the headline.",
        "knn_monitor": "Online kNN accuracy (k = 20, cosine, T = 0.07) during pre-training: one "
        "panel per method, mean over seeds with a ± 1 sd band, one colour per set.",
    }
    groups = groups_text(rows, class_names)
    knn_s = sum(float(r.get("knn_seconds") or 0.0) for r in rows)
    cell_s = sum(float(r.get("cell_seconds") or 0.0) for r in rows)
    if knn_s > 0 and cell_s > 0:
        captions["knn_monitor"] += (
            f" Its cost in this study: {knn_s:.1f} s of {cell_s:.0f} s of cell time "
            f"({100 * knn_s / cell_s:.1f}%)."
        )
    md = [f"# {title}", ""]
    if description:
        md += [description.strip(), ""]
    md += ["## Finding", "", *lead, ""]
    md += ["## Results (mean ± 95% half-width over seeds)", "", sum_md]
    own_note = _own_note(rows)
    if own_note:
        md += [own_note, ""]
    md += [*groups, ""]
    sections = tables.statistics_sections(changes, summary) if rows else []
    for heading, notes, table in sections:
        md += [f"## {heading}", "", *notes, ""] + ([table] if table else [])
    pub: list[str] = []
    if published:
        from balfeat.study.published import published_markdown

        trained = method_names if method_names is not None else [str(r["method"]) for r in rows]
        # what is trained, not its label, and on which data
        pub = published_markdown(sorted(set(trained)), datasets=published_datasets)
    md += pub
    md += [
        "## Every run",
        "",
        md_table,
        "Also as CSV: [results.csv](results.csv); paired changes in [changes.json](changes.json).",
        "",
    ]
    md += ["## Figures", ""]
    for name, p in drawn.items():
        base = _caption_key(name, captions)
        md += [f"### {name.replace('_', ' ')}", "", f"![{name}](figures/{p.name})", ""]
        md += [
            f"Also as PDF: [{p.with_suffix('.pdf').name}](figures/{p.with_suffix('.pdf').name})",
            "",
        ]
        if base in captions:
            md += [_caption(name, base, captions), ""]
    paths["report"] = out / "report.md"
    atomic_write_text(paths["report"], "\n".join(md))

    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}th{background:#f0f0f0}img{max-width:100%}"
        ".finding{background:#f6f8ff;border-left:4px solid #4060c0;padding:.5em 1em}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if description:
        for para in description.strip().split("\n\n"):
            h.append(f"<p>{html.escape(para)}</p>")
    h.append('<h2>Finding</h2><div class="finding">')
    h += [f"<p>{html.escape(line)}</p>" for line in lead if line]
    h.append("</div><h2>Results (mean ± 95% half-width over seeds)</h2>")
    h.append(_md_table_html(sum_md))
    if own_note:
        h.append(f"<p>{html.escape(own_note)}</p>")
    h += [f"<p>{html.escape(g)}</p>" for g in groups]
    for heading, notes, table in sections:
        h.append(f"<h2>{html.escape(heading)}</h2>")
        h += [f"<p>{html.escape(n)}</p>" for n in notes]
        h.append(_md_table_html(table) if table else "")
    if pub:  # heading, note, then the table's lines
        h.append(f"<h2>{html.escape(pub[0].lstrip('# '))}</h2>")
        h.append(f"<p>{html.escape(pub[2])}</p>")
        h.append(_md_table_html("\n".join(ln for ln in pub[4:] if ln)))
    h.append("<h2>Every run</h2>")
    h.append(_md_table_html(md_table))
    h.append('<p>Also as CSV: <a href="results.csv">results.csv</a>.</p><h2>Figures</h2>')
    for name, p in drawn.items():
        base = _caption_key(name, captions)
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        h.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>")
        h.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(name)}">')
        if base in captions:
            h.append(f"<p>{html.escape(_caption(name, base, captions))}</p>")
    h.append("</body></html>")
    paths["html"] = out / "report.html"
    atomic_write_text(paths["html"], "\n".join(h) + "\n")
    return paths


def _caption(figure: str, base: str, captions: Mapping[str, str]) -> str:
    """A figure's caption; the ``_own`` figures say they show the methods' own classifiers."""
    if figure.endswith("_own"):
        return "The methods' own classifiers (protocol own), not a probe. " + captions[base]
    return captions[base]


def _own_note(rows: Sequence[Row]) -> str:
    """The sentence explaining the ``own`` rows, when the table has any."""
    own = sorted({str(r["method"]) for r in rows if r.get("protocol") == "own"})
    if not own:
        return ""
    return (
        f"Protocol `own` ({', '.join(plots.display_name(m) for m in own)}): the method's own "
        "classifier, trained jointly with "
        "the representation and read from the cell's last checkpoint, on the same test images "
        "and groups as the probes' rows of the same cells."
    )


def _caption_key(figure: str, captions: Mapping[str, str]) -> str:
    """The caption of a figure drawn per protocol (``shot_accuracy_own`` -> ``shot_accuracy``)."""
    if figure in captions:
        return figure
    # the longest match: balancedness_raw_own is balancedness_raw's, not balancedness's
    found = [c for c in captions if figure.startswith(c + "_")]
    return max(found, key=len) if found else figure


def _md_table_html(md: str) -> str:
    """A Markdown pipe table (as written above) as an HTML table."""
    lines = [ln for ln in md.strip().splitlines() if ln.startswith("|")]
    if not lines:
        return ""
    out = ["<table>"]
    for i, ln in enumerate(lines):
        if i == 1:
            continue
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
