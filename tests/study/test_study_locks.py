"""A study takes the lock of each cell it trains: a second study into one folder, or a study
started while a ``pretrain`` writes into one of its cells, wipes nothing (issue 24, item 1)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_study import TINY_STUDY

from balfeat.engine.run_dir import LOCK_NAME
from balfeat.errors import TrainingError
from balfeat.study.cells import cell_dir
from balfeat.study.run import run_study
from balfeat.study.spec import study_from_mapping

ONE_CELL = {
    **TINY_STUDY,
    "family": {"total": 60, "sets": {"exp10": 10}},
    "methods": {"sl": TINY_STUDY["methods"]["sl"]},
}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["cell", "pretrain"])
def test_a_cell_another_process_holds_is_left_alone(
    tmp_path: Path, live_pid: int, where: str
) -> None:
    spec = study_from_mapping(ONE_CELL)
    out = tmp_path / "study"
    cdir = cell_dir(out, "sl", "exp10", 0)
    held = cdir if where == "cell" else cdir / "pretrain"  # another study / a `balfeat pretrain`
    held.mkdir(parents=True)
    (held / "config.yaml").write_text("run: {}\n")
    (held / "metrics.jsonl").write_text('{"step": 1}\n')
    (cdir / "notes.txt").write_text("written by the other process\n")
    (held / LOCK_NAME).write_text(f"{live_pid} {socket.gethostname()}\n")
    before = _files(cdir)
    with pytest.raises(TrainingError, match=rf"another balfeat process \(pid {live_pid}"):
        run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert _files(cdir) == before  # the other process's files, the lock included, untouched


def test_the_cell_lock_is_released_after_the_cell(tmp_path: Path) -> None:
    spec = study_from_mapping(ONE_CELL)
    out = tmp_path / "study"
    rows, _ = run_study(spec, out_dir=out, progress=False, echo=lambda s: None)
    assert rows and not list(out.rglob(LOCK_NAME))
