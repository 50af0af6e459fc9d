"""Report and plots from a synthetic results table."""

from __future__ import annotations

import csv
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
    assert "kcl" in summary_text([row])
