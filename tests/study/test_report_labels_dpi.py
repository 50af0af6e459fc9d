"""What a reader of a study sees: methods by their display names (ids only where a user types
them), and figures at the resolution ``--dpi`` asks for, as PNG and PDF, on every path that
writes a report (``balfeat study``, ``balfeat study --collect``, ``balfeat demo``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from test_report import _seeded_rows

from balfeat.cli.main import main
from balfeat.study import collect, plots, run
from balfeat.study.report import write_report


def test_report_names_methods_by_their_labels_and_keeps_ids_where_typed(tmp_path: Path) -> None:
    rows = _seeded_rows()
    rows += [dict(r, method="control") for r in rows if r["method"] == "kcl"]
    paths = write_report(rows, tmp_path, title="T", dpi=40)
    md = paths["report"].read_text()
    assert "| control |" not in md and "| untrained (control) | exp100 |" in md  # gains table
    finding = md.split("## Finding")[1].split("## Results")[0]
    assert "- SL (supervised), balanced → exp10:" not in finding  # the largest ratio only
    assert "- SL (supervised), balanced → exp100:" in finding
    assert "- MoCo v2, balanced → exp100:" in finding
    assert "SL (supervised)'s change minus KCL's change (balanced → exp100)" in finding
    for text in (md, paths["html"].read_text()):
        assert "moco_v2" not in text  # neither in the finding, nor a table, nor a caption
        assert "sl," not in text and "sl'" not in text and "| sl |" not in text
    every_run = md.split("## Every run")[1]
    assert "| SL (supervised) | balanced |" in every_run
    with paths["csv"].open() as fh:  # the CSV keeps the ids a user filters and types
        assert {r["method"] for r in csv.DictReader(fh)} == {"sl", "moco_v2", "kcl", "control"}
    changes = json.loads(paths["changes"].read_text())
    assert {c["method"] for c in changes["changes"]} == {"sl", "moco_v2", "kcl", "control"}


def test_each_figure_has_the_caption_of_its_own_kind(tmp_path: Path) -> None:
    rows = _seeded_rows()
    rows += [dict(r, protocol="own") for r in rows if r["method"] == "kcl"]
    md = write_report(rows, tmp_path, dpi=30)["report"].read_text()
    raw_own = md.split("### balancedness raw own")[1].split("###")[0]
    assert "Raw per-set balancedness" in raw_own and "paired by seed" not in raw_own
    assert "Protocol `own` (KCL)" in md


def _dpi_of(png: Path) -> tuple[float, float]:
    with Image.open(png) as im:
        return im.info["dpi"]


def test_write_report_draws_every_figure_at_the_asked_dpi_as_png_and_pdf(tmp_path: Path) -> None:
    paths = write_report(_seeded_rows(), tmp_path, dpi=300)
    pngs = [p for p in paths.values() if p.parent.name == "figures"]
    assert len(pngs) >= 7
    for png in pngs:
        assert _dpi_of(png) == pytest.approx((300, 300), abs=0.5)
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    with Image.open(paths["accuracy_vs_imbalance"]) as im:  # 8.5 x 4.6 inches at 300 dpi
        assert im.size == (8.5 * 300, 4.6 * 300)
    default = write_report(_seeded_rows(), tmp_path / "d")["accuracy_vs_imbalance"]
    assert _dpi_of(default) == pytest.approx((plots.DPI, plots.DPI), abs=0.5)


def _study_file(tmp_path: Path) -> Path:
    from test_study import TINY_STUDY

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(TINY_STUDY))
    return f


def test_collect_writes_its_figures_at_the_dpi_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _seeded_rows()

    def finished(*a: Any, **k: Any) -> tuple[list[dict[str, Any]], list[str]]:
        return rows, []

    monkeypatch.setattr(collect, "collect_study", finished)
    out = tmp_path / "out"
    assert (
        main(["study", "--collect", "--dpi", "300", "--out", str(out), str(_study_file(tmp_path))])
        == 0
    )
    png = out / "figures" / "accuracy_vs_imbalance.png"
    assert _dpi_of(png) == pytest.approx((300, 300), abs=0.5)
    assert png.with_suffix(".pdf").is_file()


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "argv",
    [["demo", "--tiny", "--dpi", "300"], ["study", "--dpi", "300"], ["demo", "--tiny"]],
    ids=["demo", "study", "demo-default"],
)
def test_study_and_demo_pass_the_dpi_to_the_report(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def record(*a: Any, **k: Any) -> Any:
        seen.update(k)
        raise _Stop

    monkeypatch.setattr(run, "run_study", record)
    args = [*argv, "--out", str(tmp_path / "o")]
    if argv[0] == "study":
        args.append(str(_study_file(tmp_path)))
    with pytest.raises(_Stop):
        main(args)
    assert seen["dpi"] == (300 if "--dpi" in argv else None)  # None: the report's default
