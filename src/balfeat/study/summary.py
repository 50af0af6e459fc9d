"""The statistics of a study: per-cell means and intervals over seeds, paired changes, headline.

Input is the *results table*: one row per (method, set, protocol, seed) with the metrics of one
probe (see :func:`balfeat.study.report.row_from_results`). Output:

- :func:`summarise`: one row per (protocol, method, set) with, for each metric, the mean, sd and
  95% interval over seeds (``top1``, ``top1_sd``, ``top1_ci`` = [low, high], ``top1_ci_method``);
  with one seed the top-1 interval is the bootstrap over test images stored in the results.
- :func:`paired_changes`: per method, the change of each metric from the balanced set to each
  long-tailed set, paired by seed; and per pair of methods the difference of those changes.
- :func:`headline`: the sentences a report leads with: which changes are distinguishable from
  zero at 95%.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from balfeat.evaluation.statistics import (
    Interval,
    describe_change,
    difference_of_changes,
    paired_differences,
    t_interval,
)

Row = dict[str, Any]

#: Metrics summarised over seeds.
METRICS: tuple[str, ...] = ("top1", "many", "medium", "few", "group_std", "slope")


def _by_seed(rows: Sequence[Row], metric: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in rows:
        v = r.get(metric)
        if isinstance(v, (int, float)) and v == v:  # not None, not NaN
            out[int(r.get("seed", 0))] = float(v)
    return out


def _key(r: Row) -> tuple[str, str, str]:
    return (str(r.get("protocol", "")), str(r["method"]), str(r["set"]))


def summarise(rows: Sequence[Row], level: float = 0.95) -> list[Row]:
    """One row per (protocol, method, set): mean, sd and interval of every metric over seeds.

    The summary row keeps the non-metric fields of the cell's first seed (``imbalance_ratio``,
    ``train_counts``, class names) and averages ``per_class_accuracy`` over seeds.
    """
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    out: list[Row] = []
    for _, cell in groups.items():
        cell = sorted(cell, key=lambda r: int(r.get("seed", 0)))
        s: Row = {k: v for k, v in cell[0].items() if k not in METRICS and k != "seed"}
        s["seeds"] = [int(r.get("seed", 0)) for r in cell]
        s["n_seeds"] = len(cell)
        for m in METRICS:
            vals = list(_by_seed(cell, m).values())
            if not vals:
                s[m] = None
                continue
            iv = t_interval(vals, level)
            if iv.n == 1 and m == "top1" and cell[0].get("top1_bootstrap"):
                b = cell[0]["top1_bootstrap"]
                iv = Interval(iv.mean, None, 1, b["low"], b["high"], level, b["method"])
            s[m] = iv.mean
            s[f"{m}_sd"] = iv.std
            s[f"{m}_ci"] = [iv.low, iv.high] if iv.low is not None else None
            s[f"{m}_ci_method"] = iv.method
        pcs = [r.get("per_class_accuracy") or [] for r in cell]
        if pcs and all(len(p) == len(pcs[0]) for p in pcs):
            mean_pc: list[float | None] = []
            for c in range(len(pcs[0])):
                vals = [p[c] for p in pcs if p[c] is not None]
                mean_pc.append(sum(vals) / len(vals) if vals else None)
            s["per_class_accuracy"] = mean_pc
        out.append(s)
    return out


def balanced_set(rows: Sequence[Row]) -> str | None:
    """The name of the least imbalanced set (ratio 1 = balanced) in the table."""
    sets = {str(r["set"]): float(r.get("imbalance_ratio", 1.0)) for r in rows}
    return min(sets, key=lambda s: sets[s]) if sets else None


def paired_changes(
    rows: Sequence[Row], metric: str = "top1", level: float = 0.95
) -> dict[str, Any]:
    """Changes from the balanced set, paired by seed, and their differences between methods.

    Returns:
        ``{"baseline": set, "metric": metric, "changes": [...], "differences": [...]}`` where each
        change is ``{"protocol", "method", "set", "interval": Interval.as_dict(), "text"}`` and
        each difference ``{"protocol", "set", "a", "b", "interval", "text"}`` is a's change
        minus b's change (a = the first method of the table, b every other).
    """
    base = balanced_set(rows)
    out: dict[str, Any] = {"baseline": base, "metric": metric, "changes": [], "differences": []}
    if base is None:
        return out
    protocols = sorted({str(r.get("protocol", "")) for r in rows})
    methods: list[str] = []
    for r in rows:
        if str(r["method"]) not in methods:
            methods.append(str(r["method"]))
    ratio = {str(r["set"]): float(r.get("imbalance_ratio", 1.0)) for r in rows}
    sets = sorted((s for s in ratio if s != base), key=lambda s: ratio[s])

    def series(p: str, m: str, s: str) -> dict[int, float]:
        return _by_seed(
            [r for r in rows if _key(r) == (p, m, s)],
            metric,
        )

    def name(m: str, p: str) -> str:  # several protocols (probe rows and 'own' rows): say which
        return m if len(protocols) == 1 else f"{m} [{p}]"

    for p in protocols:
        for m in methods:
            for s in sets:
                a, b = series(p, m, s), series(p, m, base)
                if not (set(a) & set(b)):
                    continue
                iv = paired_differences(a, b, level)
                out["changes"].append(
                    {
                        "protocol": p,
                        "method": m,
                        "set": s,
                        "interval": iv.as_dict(),
                        "text": describe_change(f"{name(m, p)}, {base} → {s}", iv),
                    }
                )
        if len(methods) < 2:
            continue
        ref = methods[0]
        for other in methods[1:]:
            for s in sets:
                cells = [series(p, ref, s), series(p, ref, base), series(p, other, s)]
                cells.append(series(p, other, base))
                if not set.intersection(*(set(c) for c in cells)):
                    continue
                iv = difference_of_changes(cells[0], cells[1], cells[2], cells[3], level=level)
                out["differences"].append(
                    {
                        "protocol": p,
                        "set": s,
                        "a": ref,
                        "b": other,
                        "interval": iv.as_dict(),
                        "text": describe_change(
                            f"{name(ref, p)}'s change minus {name(other, p)}'s change "
                            f"({base} → {s})",
                            iv,
                        ),
                    }
                )
    return out


def headline(changes: dict[str, Any]) -> list[str]:
    """The report's lead sentences: each method's change to the most imbalanced set, and the
    differences of changes between methods, each said distinguishable from zero or not."""
    if not changes.get("changes"):
        return ["No balanced set to compare with: the study has no paired changes."]
    lines: list[str] = []
    ch = changes["changes"]
    last = {}
    for c in ch:
        last[(c["protocol"], c["method"])] = c  # sets are sorted by ratio: keeps the largest
    n = max((c["interval"]["n"] for c in ch), default=1)
    lines.append(
        f"Change of {changes['metric']} from the balanced set to the most imbalanced one "
        f"(paired by seed, {n} seed(s), 95% t-interval):"
    )
    lines += [f"- {c['text']}" for c in last.values()]
    diffs = [
        d
        for d in changes["differences"]
        if (d["protocol"], d["set"]) in {(c["protocol"], c["set"]) for c in last.values()}
    ]
    if diffs:
        lines.append("")
        lines.append("Difference of those changes between methods (the paper's comparison):")
        lines += [f"- {d['text']}" for d in diffs]
        found = [d for d in diffs if Interval(**_iv_fields(d["interval"])).excludes_zero()]
        lines.append("")
        if found:
            lines.append(
                "Distinguishable from zero at 95%: "
                + "; ".join(
                    f"{d['a']} vs {d['b']} ({d['interval']['mean']:+.2f} points)" for d in found
                )
                + "."
            )
        else:
            lines.append(
                "No difference between methods is distinguishable from zero at 95%: at this "
                "size the study cannot tell the methods' sensitivity to imbalance apart."
            )
    return lines


def _iv_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("mean", "std", "n", "low", "high", "level", "method")}
