"""``balfeat study`` / ``balfeat demo`` print an estimate before training; over an hour they need
``--yes`` (or a "y" at an interactive prompt), and a batch job without it is refused (issue 24
item 8: ``seeds=1000`` started 4,000 cells without an estimate)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from balfeat.cli.main import main
from balfeat.study import plan
from balfeat.study import run as run_mod
from balfeat.study.spec import study_from_mapping

STUDY: dict[str, Any] = {
    "name": "estimate",
    "dataset": "synthetic",
    "synthetic_size": 120,
    "image_size": 12,
    "family": {"total": 48, "sets": {"balanced": 1, "exp10": 10}},
    "probe_per_class": 4,
    "test_max": 24,
    "base": {
        "data": {"num_classes": 3},
        "model": {"backbone": "resnet8"},
        "optim": {"epochs": 1, "batch_size": 16},
        "run": {"device": "cpu"},
    },
    "methods": {"sl": {"method": {"name": "sl"}, "data": {"augmentation": "none"}}},
    "probes": {"fast": {"epochs": 1}},
}


class Started(Exception):
    """Raised by the stand-in for the study loop: the study would have trained."""


@pytest.fixture
def slow_steps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every step costs an hour; the study loop is replaced by a stand-in that records its call."""
    calls: list[Any] = []

    def never(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise Started

    monkeypatch.setattr(plan, "seconds_per_step", lambda *a, **k: 3600.0)
    monkeypatch.setattr(run_mod, "run_study", never)
    return calls


def _study(tmp_path: Path, **changes: Any) -> list[str]:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return ["study", "--out", str(tmp_path / "out"), str(path)]


def test_a_study_over_an_hour_is_refused_without_yes_in_a_batch_job(
    tmp_path: Path, slow_steps: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_study(tmp_path, seeds=1000)) == 2  # pytest's stdin is not a terminal
    out, err = capsys.readouterr()
    (line,) = [ln for ln in out.splitlines() if ln.startswith("estimate: ")]
    assert "2000 cell(s)" in line and " h on cpu" in line and "sl 3.6e+03 s/step" in line
    (refusal,) = err.strip().splitlines()
    assert "--yes" in refusal and "over 1 h" in refusal
    assert not slow_steps and not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_yes_starts_it_and_the_estimate_comes_first(
    tmp_path: Path, slow_steps: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(Started):
        main([*_study(tmp_path), "--yes", "--quiet"])
    assert len(slow_steps) == 1
    assert capsys.readouterr().out.startswith("estimate: 2 cell(s) to pre-train, about 6 h")


def test_quiet_is_a_batch_job_even_on_a_terminal(
    tmp_path: Path, slow_steps: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("--quiet must not ask"))
    assert main([*_study(tmp_path), "--quiet"]) == 2
    assert not slow_steps


@pytest.mark.parametrize(("answer", "starts"), [("y", True), ("", False), ("no", False)])
def test_an_interactive_terminal_asks(
    tmp_path: Path,
    slow_steps: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    starts: bool,
) -> None:
    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or answer)
    if starts:
        with pytest.raises(Started):
            main(_study(tmp_path))
    else:
        assert main(_study(tmp_path)) == 1
    assert len(prompts) == 1 and "[y/N]" in prompts[0]
    assert len(slow_steps) == int(starts)


def test_a_resized_demo_asks_as_the_study_does(
    tmp_path: Path, slow_steps: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--tiny", "--out", str(tmp_path / "demo"), "seeds=3"]) == 2
    assert "--yes" in capsys.readouterr().err and not slow_steps


def test_the_demo_presets_print_the_estimate_and_never_stop(
    tmp_path: Path, slow_steps: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # a busy machine inflates the estimate; the laptop-sized presets still start unattended
    with pytest.raises(Started):
        main(["demo", "--tiny", "--out", str(tmp_path / "demo")])
    assert "estimate:" in capsys.readouterr().out and len(slow_steps) == 1


def test_the_estimate_is_measured_and_counts_only_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = study_from_mapping({**STUDY, "seeds": 2})
    est = plan.study_estimate(spec, tmp_path)
    assert est.cells == 4 and list(est.rates) == ["sl"]
    assert est.rates["sl"] > 0 and math.isfinite(est.hours) and est.hours > 0
    # steps: 1 epoch of ceil(48 / 16) = 3 steps per cell, 4 cells
    assert est.hours == pytest.approx(est.rates["sl"] * 12 / 3600)
    # a finished (cell, seed) is not counted
    done = run_mod.cell_dir(tmp_path, "sl", "balanced", 0) / "fast"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    assert plan.study_estimate(spec, tmp_path).cells == 3


def test_a_short_study_starts_without_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plan, "seconds_per_step", lambda *a, **k: 0.5)
    monkeypatch.setattr(run_mod, "run_study", lambda *a, **k: (_ for _ in ()).throw(Started()))
    with pytest.raises(Started):
        main(_study(tmp_path))
    assert "about 3 s on cpu" in capsys.readouterr().out
