"""The statistics of a study: per-cell means and intervals over seeds, paired changes, headline.

Input is the *results table*: one row per (method, set, protocol, seed) with the metrics of one
probe (see :func:`balfeat.study.report.row_from_results`). Output:

- :func:`summarise`: one row per (protocol, method, set) with, for each metric, the mean, sd and
  95% interval over seeds (``top1``, ``top1_sd``, ``top1_ci`` = [low, high], ``top1_ci_method``);
  with one seed the top-1 interval is the bootstrap over test images stored in the results.
- :func:`paired_changes`: per method, the change of each metric from the balanced set to each
  long-tailed set, paired by seed; and per pair of methods the difference of those changes.
- :func:`paired_balancedness`: balancedness measured against the same method's balanced-set run,
  paired by seed (class difficulty cancels): the slope of the per-class change against ln(count)
  and the many/medium/few changes, each with its 95% interval and its source.
- :func:`control_gains`: each method's gain over the untrained control row (method ``control``),
  paired by seed, on every set.
- :func:`headline`: the sentences a report leads with: which changes are distinguishable from
  zero at 95%, and what the study could detect (minimum detectable effect, seeds needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from balfeat.evaluation.metrics import change_slope
from balfeat.evaluation.statistics import (
    Interval,
    describe_change,
    difference_of_changes,
    paired_differences,
    sizing,
    t_interval,
)

Row = dict[str, Any]

#: Metrics summarised over seeds.
METRICS: tuple[str, ...] = ("top1", "many", "medium", "few", "group_std", "slope")

#: Method name of the untrained-network row (same architecture, BatchNorm statistics adapted on
#: the set, same probe): the baseline each method's gain is measured from.
CONTROL = "control"
#: What a reader sees for the control row.
CONTROL_LABEL = "untrained (control)"

#: Where each paired balancedness measure comes from (printed beside it).
SOURCES: dict[str, str] = {
    "slope": "head bias without class difficulty: slope of each class's change from the "
    "balanced set against ln(pre-training count), paired by seed",
    "group_std": "SDCLR's group std (Jiang et al. 2021, Self-Damaging Contrastive Learning) of "
    "the many/medium/few changes from the balanced set, paired by seed",
    "many": "the paper's many/medium/few groups (Kang et al. 2021), change from the balanced "
    "set paired by seed",
}


def method_label(method: str) -> str:
    """Human-readable name of a method id (``moco_v2`` -> ``MoCo v2``): its registry label; an
    id no method is registered under (an old results file) prints as it is."""
    from balfeat.methods import METHODS

    entry = METHODS.get(method)
    return entry.label if entry is not None else method


def display_name(method: str) -> str:
    """What a report, table or figure calls a method: the control's label, else
    :func:`method_label`. Ids stay where a user types them (commands, CSV, JSON keys)."""
    return CONTROL_LABEL if method == CONTROL else method_label(method)


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
        minus b's change (a = the first method of the table other than the control, b every
        other). Each change and difference also has ``"sizing"``
        (:func:`balfeat.evaluation.statistics.sizing`).
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
        return display_name(m) if len(protocols) == 1 else f"{display_name(m)} [{p}]"

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
                        "sizing": sizing(iv),
                        "text": describe_change(f"{name(m, p)}, {base} → {s}", iv),
                    }
                )
        compared = [m for m in methods if m != CONTROL]
        if len(compared) < 2:
            continue
        ref = compared[0]
        for other in compared[1:]:
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
                        "sizing": sizing(iv),
                        "text": describe_change(
                            f"{name(ref, p)}'s change minus {name(other, p)}'s change "
                            f"({base} → {s})",
                            iv,
                        ),
                    }
                )
    return out


def control_gains(rows: Sequence[Row], metric: str = "top1", level: float = 0.95) -> list[Row]:
    """Each method's gain over the untrained control (method :data:`CONTROL`) on the same set and
    protocol, paired by seed: what pre-training added. Empty without control rows.

    Returns:
        ``[{"protocol", "method", "set", "interval", "sizing", "text"}, ...]``.
    """
    out: list[Row] = []
    if not any(str(r["method"]) == CONTROL for r in rows):
        return out
    protocols = sorted({str(r.get("protocol", "")) for r in rows})
    ratio = {str(r["set"]): float(r.get("imbalance_ratio", 1.0)) for r in rows}
    methods: list[str] = []
    for r in rows:
        if str(r["method"]) not in methods and str(r["method"]) != CONTROL:
            methods.append(str(r["method"]))
    for p in protocols:
        for m in methods:
            for s in sorted(ratio, key=lambda x: ratio[x]):
                a = _by_seed([r for r in rows if _key(r) == (p, m, s)], metric)
                b = _by_seed([r for r in rows if _key(r) == (p, CONTROL, s)], metric)
                if not (set(a) & set(b)):
                    continue
                iv = paired_differences(a, b, level)
                who = display_name(m) if len(protocols) == 1 else f"{display_name(m)} [{p}]"
                out.append(
                    {
                        "protocol": p,
                        "method": m,
                        "set": s,
                        "interval": iv.as_dict(),
                        "sizing": sizing(iv),
                        "text": describe_change(
                            f"{who}'s gain over the untrained control on {s}", iv
                        ),
                    }
                )
    return out


def paired_balancedness(rows: Sequence[Row], level: float = 0.95) -> list[Row]:
    """Balancedness relative to the same method's balanced-set run, paired by seed.

    For every (protocol, method, long-tailed set) and seed ``s`` with a balanced-set row of the
    same protocol, method and seed:

    - ``slope``: :func:`balfeat.evaluation.metrics.change_slope` of the per-class accuracies
      (rows need ``per_class_accuracy`` and ``train_counts``; absent -> ``None``);
    - ``many``/``medium``/``few``: the group accuracy minus the balanced run's;
    - ``group_std``: population std of those three changes (SDCLR's measure, on changes).

    Each becomes a t-interval over seeds (``Interval.as_dict()``, ``None`` when no seed has it);
    :data:`SOURCES` names where each comes from. Class difficulty, which the raw per-set
    ``slope`` and ``group_std`` carry, cancels in the change.
    """
    base = balanced_set(rows)
    out: list[Row] = []
    if base is None:
        return out
    index = {(*_key(r), int(r.get("seed", 0))): r for r in rows}
    cells = sorted({_key(r) for r in rows if str(r["set"]) != base}, key=_cell_order(rows))
    for p, m, s in cells:
        per: dict[str, dict[int, float]] = {k: {} for k in ("slope", "group_std", *_GROUPS)}
        for (p2, m2, s2, seed), r in index.items():
            ref = index.get((p, m, base, seed))
            if (p2, m2, s2) != (p, m, s) or ref is None:
                continue
            changes = [_diff(r.get(g), ref.get(g)) for g in _GROUPS]
            for g, c in zip(_GROUPS, changes, strict=True):
                if c is not None:
                    per[g][seed] = c
            if all(c is not None for c in changes):
                per["group_std"][seed] = float(np.std(np.asarray(changes, dtype=np.float64)))
            slope = _seed_slope(r, ref)
            if slope is not None:
                per["slope"][seed] = slope
        entry: Row = {"protocol": p, "method": m, "set": s, "baseline": base}
        for k, vals in per.items():
            entry[k] = t_interval(list(vals.values()), level).as_dict() if vals else None
        out.append(entry)
    return out


_GROUPS = ("many", "medium", "few")


def _diff(a: Any, b: Any) -> float | None:
    ok = all(isinstance(v, (int, float)) and v == v for v in (a, b))
    return float(a) - float(b) if ok else None


def _seed_slope(row: Row, ref: Row) -> float | None:
    acc, bal, counts = (
        row.get("per_class_accuracy"),
        ref.get("per_class_accuracy"),
        row.get("train_counts"),
    )
    if not acc or not bal or not counts or not len(acc) == len(bal) == len(counts):
        return None
    to_f = [[math.nan if v is None else float(v) for v in x] for x in (acc, bal)]
    return change_slope(to_f[0], to_f[1], [int(c) for c in counts])


def _cell_order(rows: Sequence[Row]) -> Any:
    ratio = {str(r["set"]): float(r.get("imbalance_ratio", 1.0)) for r in rows}
    methods: list[str] = []
    for r in rows:
        if str(r["method"]) not in methods:
            methods.append(str(r["method"]))
    return lambda k: (k[0], methods.index(k[1]), ratio[k[2]])


def findings(rows: Sequence[Row], metric: str = "top1", level: float = 0.95) -> dict[str, Any]:
    """Everything a report states, in one JSON-ready dict: :func:`paired_changes` plus
    ``control_gains``, ``paired_balancedness`` and the ``mde_formula``."""
    from balfeat.evaluation.statistics import MDE_FORMULA

    out = paired_changes(rows, metric, level)
    out["control_gains"] = control_gains(rows, metric, level)
    out["paired_balancedness"] = paired_balancedness(rows, level)
    out["mde_formula"] = MDE_FORMULA
    return out


def headline(changes: dict[str, Any]) -> list[str]:
    """The report's lead sentences: each method's gain over the control (when the study has a
    control row), its change to the most imbalanced set, the differences of changes between
    methods, each said distinguishable from zero or not, and what the study could detect."""
    lines: list[str] = []
    gains = changes.get("control_gains") or []
    if gains:
        lines.append(
            "Gain over the untrained control (same network, BatchNorm adapted, same probe; "
            "paired by seed, 95% t-interval):"
        )
        lines += [f"- {g['text']}" for g in gains]
        lines.append("")
    if not changes.get("changes"):
        return [*lines, "No balanced set to compare with: the study has no paired changes."]
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
                "Distinguishable from zero at 95% (findings): "
                + "; ".join(
                    f"{display_name(d['a'])} vs {display_name(d['b'])} "
                    f"({d['interval']['mean']:+.2f} points)"
                    for d in found
                )
                + ". Every other difference above is not a finding at this size."
            )
        else:
            lines.append(
                "No difference between methods is distinguishable from zero at 95%: at this "
                "size the study cannot tell the methods' sensitivity to imbalance apart."
            )
    lines += _sizing_lines([*last.values(), *diffs])
    return lines


def _sizing_lines(items: Sequence[Row]) -> list[str]:
    """What the study could detect: the MDE and seeds for ±1 point of each headline comparison."""
    sized = [c for c in items if c.get("sizing")]
    if not sized:
        return []
    out = [
        "",
        "What this study can detect (from the observed seed spread of each paired comparison; "
        "minimum detectable effect at two-sided 95% and 80% power, and the seeds a ±1-point "
        "95% interval would need):",
    ]
    for c in sized:
        what = c["text"].split(":")[0]
        sz, iv = c["sizing"], c["interval"]
        out.append(
            f"- {what}: sd {iv['std']:.2f} over {iv['n']} seeds, MDE {sz['mde']:.2f} points, "
            f"{sz['seeds_for_1pt']} seeds for ±1 point"
        )
    return out


def _iv_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("mean", "std", "n", "low", "high", "level", "method")}
