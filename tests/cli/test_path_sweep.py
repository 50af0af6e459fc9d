"""The path sweep: every path key and path flag means the same from any folder (issue 24, item 3).

Derived, not hand-written: every field declared with ``path_kind`` in the job types (pre-training
``Config``, ``ProbeJob``, ``StudySpec``) and every option typed ``path_of`` in the argparse tree
gets ``~``, ``$VAR`` and a relative path, and must come back absolute, expanded, with the text as
typed kept; an unset variable is a one-line error. Every command that writes a named output
refuses to replace one unless asked (``--force``), or is listed with how it keeps what is there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balfeat.classify.job import ProbeJob
from balfeat.cli.main import build_parser, iter_parsers
from balfeat.engine.config import Config
from balfeat.errors import ConfigError, DataError
from balfeat.study.spec import StudySpec
from balfeat.typed_config import load_typed, typed_paths

LEAVES = iter_parsers(build_parser())


def _path_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, kind)`` of every path field of a dataclass tree (its default sections)."""
    obj = cls()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _path_keys(type(value), f"{prefix}{f.name}.")
        elif f.metadata.get("path"):
            yield prefix + f.name, f.metadata["path"]


JOB_KEYS = [(cls, key) for cls in (Config, ProbeJob, StudySpec) for key, _ in _path_keys(cls)]


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory, a HOME and a $BALFEAT_SWEEP_DIR, all under ``tmp_path``."""
    for d in ("cwd", "home", "var"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BALFEAT_SWEEP_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("BALFEAT_UNSET_VAR", raising=False)
    return tmp_path


CASES = {
    "tilde": ("~/x/y.txt", "home/x/y.txt"),
    "env": ("$BALFEAT_SWEEP_DIR/y.txt", "var/y.txt"),
    "env-braces": ("${BALFEAT_SWEEP_DIR}/y.txt", "var/y.txt"),
    "relative": ("sub/y.txt", "cwd/sub/y.txt"),
}


def test_the_job_types_have_path_keys() -> None:
    keys = {k for _, k in JOB_KEYS}
    assert {"data.train_split", "run.output_dir", "probe.train_split", "output_dir"} <= keys


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("cls", "key"), JOB_KEYS, ids=[f"{c.__name__}:{k}" for c, k in JOB_KEYS])
def test_every_path_key_is_resolved_once_at_load(
    elsewhere: Path, cls: type, key: str, case: str
) -> None:
    typed, want = CASES[case]
    cfg = load_typed(cls, [], [f"{key}={typed}"])
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part) if not isinstance(node, str) else node
    assert node == str(elsewhere / want)
    assert typed_paths(cfg)[key] == typed  # the text as typed, beside it
    # stored and read back from another folder, it still means the same file
    os.chdir(elsewhere / "var")
    again = load_typed(cls, [], [f"{key}={node}"])
    assert typed_paths(again) == {}


@pytest.mark.parametrize(("cls", "key"), JOB_KEYS, ids=[f"{c.__name__}:{k}" for c, k in JOB_KEYS])
def test_an_unset_variable_in_a_path_key_is_an_error(elsewhere: Path, cls: type, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: .*\$BALFEAT_UNSET_VAR, which is not set"):
        load_typed(cls, [], [f"{key}=$BALFEAT_UNSET_VAR/x"])


PATH_FLAGS = [
    (prog, a)
    for prog, p in LEAVES
    for a in p._actions
    if getattr(a.type, "balfeat_path", None) in ("new_file", "out_dir", "file_or_dir", "dir")
]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    ("prog", "action"),
    PATH_FLAGS,
    ids=[f"{prog}:{max(a.option_strings or [a.dest], key=len)}" for prog, a in PATH_FLAGS],
)
def test_every_path_flag_is_resolved(
    elsewhere: Path, prog: str, action: argparse.Action, case: str
) -> None:
    typed, want = CASES[case]
    kind = action.type.balfeat_path  # type: ignore[union-attr]
    target = elsewhere / want
    if kind in ("dir", "file_or_dir"):  # must exist
        target.mkdir(parents=True)
    assert action.type(typed) == str(target)  # type: ignore[misc]


#: Commands that write a named output without ``--force``, with how they keep what is there.
KEEPS_WITHOUT_FORCE = {
    "balfeat pretrain": "run.output_dir: a folder holding a run is refused unless --resume or "
    "run.overwrite=true, both under the folder's lock (tests/engine/test_run_dir.py)",
    "balfeat study": "finished cells are reused, never replaced; each cell is locked while it "
    "runs (tests/study/test_study_locks.py)",
    "balfeat demo": "a study: as balfeat study",
}


def test_every_command_writing_a_named_output_asks_before_replacing() -> None:
    writers = {
        prog
        for prog, p in LEAVES
        for a in p._actions
        if getattr(a.type, "balfeat_path", None) in ("new_file", "out_dir")
        or prog == "balfeat pretrain"
    }
    assert writers >= {"balfeat probe", "balfeat export", "balfeat splits make balanced"}
    for prog, p in LEAVES:
        if prog not in writers or prog in KEEPS_WITHOUT_FORCE:
            continue
        flags = {s for a in p._actions for s in a.option_strings}
        assert "--force" in flags, f"{prog} writes a named output but has no --force"


def test_a_relative_split_read_from_another_folder_is_found_or_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that names its training split relatively (as one written before paths were
    resolved did): a probe from another folder must not group by its own counts silently."""
    cfg = {"data": {"dataset": "imagenet", "train_split": "splits/train.txt"}}
    from balfeat.classify.runner import group_counts

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(group_counts="")
    with pytest.raises(DataError, match=r"data.train_split 'splits/train.txt'.*--group-counts"):
        group_counts(args, {"config": cfg}, [5, 3, 1])
    # a path resolved at training time is found from any folder
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a.png 0\nb.png 0\nc.png 1\nd.png 2\n")
    trained = load_typed(Config, [], ["data.train_split=splits/train.txt"])
    monkeypatch.chdir(tmp_path / "splits")
    saved = {"data": dataclasses.asdict(trained.data)}
    counts, source = group_counts(args, {"config": saved}, [5, 3, 1])
    assert list(counts) == [2, 1, 1] and "from checkpoint" in source
