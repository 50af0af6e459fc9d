"""Report and plots from a synthetic results table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from balfeat.study.plots import ordered_methods, ordered_sets
from balfeat.study.report import row_from_results, summary_text, table_markdown, write_report


def _rows() -> list[dict[str, Any]]:
    rows = []
    for m, base in (("kcl", 80.0), ("sl", 85.0), ("moco_v2", 75.0)):
        for s, ratio in (("exp100", 100.0), ("balanced", 1.0), ("exp10", 10.0)):
            counts = [int(1000 * ratio ** (-i / 4)) for i in range(5)]
            acc = [base - i * math.log10(ratio) for i in range(5)]
            rows.append(
                {
                    "method": m,
                    "set": s,
                    "imbalance_ratio": ratio,
                    "protocol": "fast",
                    "top1": sum(acc) / 5,
                    "many": acc[0],
                    "medium": acc[2],
                    "few": None if s == "balanced" else acc[4],
                    "group_std": 1.0,
                    "slope": None,
                    "train_counts": counts,
                    "per_class_accuracy": [*acc[:4], None],
                    "train_images": sum(counts),
                }
            )
    return rows


def test_ordering_follows_imbalance_and_method_order() -> None:
    rows = _rows()
    assert ordered_sets(rows) == ["balanced", "exp10", "exp100"]
    assert ordered_methods(rows) == ["sl", "moco_v2", "kcl"]


def test_write_report_writes_table_figures_and_html(tmp_path: Path) -> None:
    paths = write_report(_rows(), tmp_path, title="T", description="Setup.")
    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 9
    assert table[0]["method"] == "sl" and table[0]["set"] == "balanced"
    assert table[0]["few"] == ""  # None is an empty cell, not 0
    md = paths["report"].read_text()
    assert "# T" in md and "Setup." in md and "| method |" in md
    for name in (
        "accuracy_vs_imbalance",
        "per_class_vs_count",
        "per_class_change_vs_count",
        "shot_accuracy",
        "balancedness",
    ):
        png = paths[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
        assert f"figures/{png.name}" in md
        assert 'src="data:image/png;base64,' in paths["html"].read_text()
    assert "n/a" in table_markdown(_rows())


def test_row_from_results_reads_evaluate_output() -> None:
    import numpy as np

    from balfeat.evaluation.metrics import evaluate

    logits = np.eye(3)[[0, 1, 2, 0, 1, 1]]
    labels = np.array([0, 1, 2, 0, 1, 2])
    res = evaluate(logits, labels, np.array([100, 10, 1]), grouping="thirds")
    row = row_from_results(res, "kcl", "exp100", 100.0, "fast")
    assert row["train_counts"] == [100, 10, 1]
    assert row["per_class_accuracy"] == [100.0, 100.0, 50.0]
    assert row["few"] == 50.0 and row["many"] == 100.0
    assert "KCL" in summary_text([row])  # the display name, not the id


def _seeded_rows() -> list[dict[str, Any]]:
    rows = []
    for seed in range(3):
        for r in _rows():
            r = dict(r, seed=seed, top1=r["top1"] + 0.3 * seed * (r["set"] != "balanced"))
            rows.append(r)
    return rows


def test_report_keeps_raw_balancedness_out_of_the_headline_and_states_the_mde(
    tmp_path: Path,
) -> None:
    paths = write_report(_seeded_rows(), tmp_path, title="T", dpi=40)
    md = paths["report"].read_text()
    summary_header = md.split("## Results (mean ± 95% half-width over seeds)")[1].splitlines()[2]
    assert "slope" not in summary_header and "group_std" not in summary_header
    assert "## Raw per-set balancedness (includes class difficulty)" in md
    assert "raw slope (includes class difficulty)" in md
    assert "## Balancedness against the balanced set (paired by seed)" in md
    assert "SDCLR's group std (Jiang et al. 2021" in md
    assert "## How large an effect this study can detect" in md
    assert "80% power" in md and "MDE" in md
    assert "figures/paired_changes.pdf" in md
    changes = json.loads(paths["changes"].read_text())
    assert {"control_gains", "paired_balancedness", "mde_formula"} <= set(changes)
    assert "Raw per-set balancedness" in paths["html"].read_text()


def test_read_rows_redraws_a_report_from_its_own_files(tmp_path: Path) -> None:
    from balfeat.study.report import read_rows

    rows = _seeded_rows()
    write_report(rows, tmp_path / "a", dpi=40)
    again = read_rows(tmp_path / "a")  # results.jsonl: every field
    assert len(again) == len(rows)
    assert again[0]["per_class_accuracy"] == _sort(rows)[0]["per_class_accuracy"]
    (tmp_path / "a" / "results.jsonl").unlink()
    scalar = read_rows(tmp_path / "a")  # results.csv: scalar columns, None for empty cells
    assert scalar[0]["method"] == "sl" and isinstance(scalar[0]["seed"], int)
    assert scalar[0]["few"] is None and "per_class_accuracy" not in scalar[0]
    paths = write_report(scalar, tmp_path / "b", dpi=40)
    assert "per_class_vs_count" not in paths  # nothing to draw it from
    assert "paired_changes" in paths and "balancedness" in paths


def _sort(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from balfeat.study.report import _sort_rows

    return _sort_rows(rows)
