"""Study figures: PNG + PDF at the asked dpi, panels that wrap, legends outside the data, no value
labels over error bars, kNN curves as small multiples with display names, the control row."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from balfeat.study import figures, plots, plots_groups, plots_knn, plots_per_class
from balfeat.study.summary import findings, summarise


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plot writers draw, kept instead of saved."""
    figures_drawn: list[Any] = []

    def keep(fig: Any, path: Any, dpi: int = plots.DPI) -> Path:
        figures_drawn.append(fig)
        return Path(path)

    for module in (plots, plots_groups, plots_knn, plots_per_class):
        if hasattr(module, "save_figure"):
            monkeypatch.setattr(module, "save_figure", keep)
    return figures_drawn


METHODS = ("control", "sl", "moco_v2", "kcl", "supcon", "tsc", "bcl", "paco")


def _rows() -> list[dict[str, Any]]:
    rows = []
    for k, m in enumerate(METHODS):
        for s, ratio in (("balanced", 1.0), ("exp100", 100.0)):
            counts = [600] * 4 if ratio == 1 else [1000, 300, 60, 10]
            for seed in range(3):
                acc = [70.0 + k + seed * 0.5 - i * (ratio > 1) * (seed + 1) for i in range(4)]
                rows.append(
                    {"method": m, "set": s, "imbalance_ratio": ratio, "protocol": "fast",
                     "seed": seed, "top1": sum(acc) / 4, "many": acc[0], "medium": acc[1],
                     "few": acc[3], "train_counts": counts, "per_class_accuracy": acc}
                )  # fmt: skip
    return rows


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return int(width), int(height)


def test_every_figure_is_written_as_png_and_pdf_at_the_asked_dpi(tmp_path: Path) -> None:
    rows = _rows()
    summary = summarise(rows)
    out = figures.plot_all(summary, tmp_path / "a", findings=findings(rows), dpi=50)
    assert set(out) == {
        "paired_changes", "gain_over_control", "accuracy_vs_imbalance", "per_class_vs_count",
        "per_class_change_vs_count", "shot_accuracy", "balancedness", "balancedness_raw",
    }  # fmt: skip
    for png in out.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    big = plots.plot_accuracy_vs_imbalance(summary, tmp_path / "b.png", dpi=100)
    assert _png_size(big)[0] == pytest.approx(2 * _png_size(out["accuracy_vs_imbalance"])[0], abs=2)


def test_panels_of_many_methods_wrap_onto_rows(tmp_path: Path) -> None:
    summary = summarise(_rows())
    png = plots_per_class.plot_per_class_vs_count(summary, tmp_path / "pc.png", dpi=40)
    assert png is not None
    width, height = _png_size(png)
    assert width <= (plots.MAX_WIDTH + 0.7) * 40  # 8 methods: not one row 8 panels wide
    assert height > 2 * 3.4 * 40  # at least two rows of panels


def test_bars_carry_no_value_labels_and_legends_sit_outside_the_axes(
    tmp_path: Path, drawn: list[Any]
) -> None:
    plots_groups.plot_shot_bars(summarise(_rows()), tmp_path / "s.png")
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes and all(not ax.texts for ax in axes)  # no numbers over the error bars
    assert all(ax.get_legend() is None for ax in axes)  # no legend inside a panel
    assert len(fig.legends) == 1


def test_control_row_is_listed_first_grey_and_named_untrained() -> None:
    assert plots.ordered_methods([{"method": m} for m in reversed(METHODS)])[0] == "control"
    assert plots.display_name("control") == "untrained (control)"
    assert plots.method_style("control", METHODS)["linestyle"] == "--"
    # a known method keeps its colour whichever methods a figure shows
    assert plots.method_style("kcl", METHODS) == plots.method_style("kcl", ["kcl"])


def test_gain_over_control_is_drawn_only_with_control_rows(tmp_path: Path) -> None:
    from balfeat.study.plots_paired import plot_control_gains

    rows = _rows()
    assert plot_control_gains(findings(rows), tmp_path / "g.png") is not None
    no_control = [r for r in rows if r["method"] != "control"]
    assert plot_control_gains(findings(no_control), tmp_path / "h.png") is None


def test_knn_curves_are_small_multiples_with_display_names(
    tmp_path: Path, drawn: list[Any]
) -> None:
    for m in ("sl", "moco_v2"):
        for s in ("balanced", "exp100"):
            for seed in (0, 1, 2):
                d = tmp_path / "cells" / f"{m}__{s}" / f"seed{seed}" / "pretrain"
                d.mkdir(parents=True)
                lines = [json.dumps({"epoch": e, "knn_top1": 50.0 + e + seed}) for e in (1, 2)]
                (d / "metrics.jsonl").write_text("\n".join([*lines, "not json"]) + "\n")
    curves = plots_knn.read_knn_curves(tmp_path)
    assert curves["sl"]["exp100"]["seed2"] == [(1.0, 53.0), (2.0, 54.0)]
    assert plots_knn.plot_knn_curves(tmp_path, tmp_path / "k.png") is not None
    axes = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["SL (supervised)", "MoCo v2"]
    assert all(len(ax.get_lines()) == 2 for ax in axes)  # one mean line per set, not per seed
    assert plots_knn.plot_knn_curves(tmp_path / "none", tmp_path / "x.png") is None


def test_panels_wrap_into_even_rows() -> None:
    fig, axes = plots.panel_grid(4)  # 3 fit in a row: 2 + 2, not 3 + 1
    assert [ax.get_subplotspec().colspan.start for ax in axes] == [0, 1, 0, 1]
    assert len(fig.axes) == 4
    fig, axes = plots.panel_grid(8)
    assert len(fig.axes) == 9 and sum(ax.get_visible() for ax in fig.axes) == 8
    plots.plt.close("all")


def test_own_classifier_rows_are_not_labelled_as_a_probe(tmp_path: Path, drawn: list[Any]) -> None:
    rows = summarise(_rows())
    own = [dict(r, protocol="own") for r in rows]
    plots.plot_accuracy_vs_imbalance(own, tmp_path / "a.png")
    plots.plot_accuracy_vs_imbalance(rows, tmp_path / "b.png")
    plots_groups.plot_shot_bars(own, tmp_path / "c.png")
    ylabels = [fig.axes[0].get_ylabel() for fig in drawn]
    assert ylabels == [
        "own-classifier top-1 accuracy (%)",
        "linear-probe top-1 accuracy (%)",
        "own-classifier accuracy (%)",
    ]
