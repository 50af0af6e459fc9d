"""``balfeat demo`` and ``balfeat study``: parsing, and a tiny end-to-end run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balfeat.cli.main import build_parser, main
from balfeat.study.cells import StudyData, load_study_data
from balfeat.study.demo import demo_spec
from balfeat.study.run import run_study


def test_demo_and_study_are_commands(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["demo", "--out", "x", "--full"])
    assert ns.out == os.path.abspath("x") and ns.full and not ns.tiny  # path flags: absolute
    f = tmp_path / "f.yaml"
    f.write_text("methods: {sl: {method: {name: sl}}}\n")
    ns = build_parser().parse_args(["study", str(f), "optim.epochs=1"])
    assert ns.file == str(f) and ns.overrides == ["optim.epochs=1"]


def test_demo_refuses_a_seed_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tiny", "--out", "never-written", "run.seed=1"]) == 2
    err = capsys.readouterr().err
    assert "run.seed" in err and "seeds=" in err
    assert not Path("never-written").exists()


def test_demo_spec_has_the_grid() -> None:
    spec = demo_spec("out")
    assert list(spec.methods) == ["sl", "moco_v2", "kcl"]
    assert spec.sets == {"balanced": 1.0, "exp100": 100.0}
    assert spec.seeds == 5 and spec.control
    assert spec.grouping == "thirds"
    full = demo_spec("out", full=True)
    assert full.sets == {"balanced": 1.0, "exp10": 10.0, "exp100": 100.0}
    assert full.total > spec.total and full.base["optim"]["epochs"] > spec.base["optim"]["epochs"]


def test_study_cli_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("methods: {sl: {method: {name: sl}}}\nfamly: {}\n")
    assert main(["study", str(bad)]) == 2
    assert "did you mean 'family'" in capsys.readouterr().err


def _tiny_data() -> StudyData:
    """Fashion-MNIST when it is on this machine (no fetching), else a synthetic stand-in."""
    from balfeat.data.sources import find_fashion_mnist

    spec = demo_spec("x", tiny=True)
    if find_fashion_mnist() is not None:
        return load_study_data(spec)
    from balfeat.engine.build import synthetic_arrays

    tx, ty = synthetic_arrays(2000, 10, 28, 1, 0)
    vx, vy = synthetic_arrays(300, 10, 28, 1, 1)
    return StudyData(tx, ty, vx, vy, [str(i) for i in range(10)])


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end(tmp_path: Path) -> None:
    spec = demo_spec(tmp_path / "demo", tiny=True)
    rows, paths = run_study(spec, progress=False, echo=lambda s: None, data=_tiny_data())
    assert len(rows) == (6 + 2) * len(spec.run_seeds)  # 3 methods x 2 sets + the controls
    assert {r["method"] for r in rows} == {"sl", "moco_v2", "kcl", "control"}
    assert all(r["top1"] is not None for r in rows)
    assert paths["report"].is_file() and paths["html"].is_file()
    assert (tmp_path / "demo" / "figures" / "accuracy_vs_imbalance.png").is_file()
