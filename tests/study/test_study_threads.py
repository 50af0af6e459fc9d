"""A study chooses its torch thread count again before every cell it runs and records the number
each cell used; a fixed ``--threads N`` stays N for every cell."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_study import TINY_STUDY

from balfeat.cli.main import main
from balfeat.study import jobs as jobs_mod
from balfeat.study import run as run_mod
from balfeat.study.run import run_study
from balfeat.study.spec import study_from_mapping


class FakeThreads:
    """``configure_threads`` answering 2, 1, 2, 1, ... for ``threads=0`` (the load changing
    between cells), N for a fixed N; sets torch's number as the real one does."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, threads: int) -> int:
        self.calls.append(threads)
        used = threads or (2 if len(self.calls) % 2 else 1)
        torch.set_num_threads(used)
        return used


def _recorded(out: Path, method: str, seed: int) -> int:
    results = json.loads((out / "cells" / f"{method}__balanced" / f"seed{seed}" / "fast" /
                          "results.json").read_text())  # fmt: skip
    return int(results["provenance"]["torch_threads"])


def test_threads_rechosen_per_cell_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = {**TINY_STUDY, "seeds": [0, 1], "family": {"total": 60, "sets": {"balanced": 1}}}
    study["methods"] = {"sl": TINY_STUDY["methods"]["sl"]}
    spec = study_from_mapping(study)
    fake = FakeThreads()
    monkeypatch.setattr(run_mod, "configure_threads", fake)
    lines: list[str] = []
    out = tmp_path / "s"
    run_study(spec, out_dir=out, progress=False, echo=lines.append, threads=0)
    assert fake.calls == [0, 0, 0, 0]  # 2 control cells, then 2 trained cells
    assert [_recorded(out, "control", s) for s in (0, 1)] == [2, 1]
    assert [_recorded(out, "sl", s) for s in (0, 1)] == [2, 1]
    cell_lines = [ln for ln in lines if ln.startswith("[")]
    assert "2 torch thread(s)" in cell_lines[0] and "1 torch thread(s)" in cell_lines[1]
    # finished cells are skipped: nothing to choose threads for
    run_study(spec, out_dir=out, progress=False, echo=lines.append, threads=0)
    assert fake.calls == [0, 0, 0, 0]


def test_library_default_leaves_threads_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = {**TINY_STUDY, "family": {"total": 60, "sets": {"balanced": 1}}, "control": False}
    study["methods"] = {"sl": TINY_STUDY["methods"]["sl"]}
    fake = FakeThreads()
    monkeypatch.setattr(run_mod, "configure_threads", fake)
    run_study(study_from_mapping(study), out_dir=tmp_path / "s", progress=False,
              echo=lambda s: None)  # fmt: skip
    assert fake.calls == [] and _recorded(tmp_path / "s", "sl", 0) == 1  # the tests' 1 thread


def test_job_study_rechecks_before_each_job_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [SimpleNamespace(method="sl", set_name="b", seed=s) for s in (0, 1, 2)]
    ran: list[int] = []
    monkeypatch.setattr(jobs_mod, "cell_jobs", lambda *a: jobs)
    monkeypatch.setattr(jobs_mod, "job_done", lambda job: job.seed == 1)
    monkeypatch.setattr(jobs_mod, "run_job", lambda spec, job, *a: ran.append(job.seed))
    monkeypatch.setattr(jobs_mod, "job_rows", lambda spec, job: [])
    checks: list[int] = []

    def before_cell() -> str:
        checks.append(len(ran))  # called before the job runs
        return "1 torch thread(s)"

    lines: list[str] = []
    spec: Any = SimpleNamespace(launcher="local")
    jobs_mod.run_job_study(spec, tmp_path, (), lines.append, False, before_cell)
    assert checks == [0, 1] and ran == [0, 2]
    assert lines == [
        "[1/3] sl on b, seed 0 ... (1 torch thread(s))",
        "[2/3] sl on b, seed 1: done before, skipped",
        "[3/3] sl on b, seed 2 ... (1 torch thread(s))",
    ]


@pytest.mark.parametrize(("flag", "threads"), [([], 0), (["--threads", "3"], 3)])
def test_the_commands_pass_their_thread_setting_to_every_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], threads: int
) -> None:
    seen: list[Any] = []

    def fake_run_study(spec: Any, **kw: Any) -> Any:
        seen.append(kw["threads"])
        raise KeyboardInterrupt  # stop here: the command's work is not under test

    monkeypatch.setattr(run_mod, "run_study", fake_run_study)
    monkeypatch.setattr("balfeat.device.configure_threads", lambda n: max(n, 1))
    # the estimate before training is not under test (tests/cli/test_study_estimate.py)
    monkeypatch.setattr(
        "balfeat.study.plan.study_estimate", lambda *a, **k: SimpleNamespace(cells=0)
    )
    file = tmp_path / "s.yaml"
    file.write_text("dataset: synthetic\nmethods: {sl: {method: {name: sl}}}\n")
    assert main(["study", *flag, "--out", str(tmp_path / "o"), str(file)]) == 130
    assert main(["demo", "--tiny", *flag, "--out", str(tmp_path / "d")]) == 130
    assert seen == [threads, threads]
