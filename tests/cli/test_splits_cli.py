from __future__ import annotations

import json
from pathlib import Path

import pytest

from balfeat.cli.main import main
from balfeat.data.splits import SplitEntry, read_class_set, read_split, split_stats, write_split

REFERENCE_SPLITS = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference-splits"

PAPER = {  # max / min / total per class, from the paper's README
    "imagenet_100k_train": ("115", "115", "115,000"),
    "imagenet_lt2_train": ("204", "67", "115,885"),
    "imagenet_lt4_train": ("343", "37", "115,801"),
    "imagenet_lt6_train": ("553", "20", "115,836"),
    "imagenet_lt8_train": ("857", "10", "115,852"),
}


@pytest.fixture
def refs() -> Path:
    if not (REFERENCE_SPLITS / "imagenet_lt8_train.txt").is_file():
        pytest.skip("../shared/reference-splits is not present")
    return REFERENCE_SPLITS.resolve()


def test_stats_reproduce_paper_figures(refs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(refs / f"{name}.txt") for name in PAPER]
    assert main(["splits", "stats", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "split",
        "classes",
        "max",
        "min",
        "total",
        "ratio",
        "many",
        "medium",
        "few",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for name, (hi, lo, total) in PAPER.items():
        assert rows[name][1] == "1,000"
        assert tuple(rows[name][2:5]) == (hi, lo, total), name


def test_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "tiny.txt"
    write_split(
        f, [SplitEntry(f"/c{c}/{i}.jpg", c) for c, n in enumerate([3, 1]) for i in range(n)]
    )
    assert main(["splits", "stats", "--json", str(f)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tiny"] == {
        "classes": 2,
        "max": 3,
        "min": 1,
        "total": 4,
        "ratio": 3.0,
        "many": 0,
        "medium": 0,
        "few": 2,
    }


def test_stats_bad_file_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("/a/x.jpg 0\n/a/y.jpg\n")
    assert main(["splits", "stats", str(f)]) == 2
    assert f"{f}:2" in capsys.readouterr().err


def _pool(tmp_path: Path, per_class: int = 30, classes: int = 4) -> Path:
    f = tmp_path / "pool.txt"
    write_split(
        f,
        [
            SplitEntry(f"/n{c:03d}/n{c:03d}_{i}.JPEG", c)
            for c in range(classes)
            for i in range(per_class)
        ],
    )
    return f


def test_make_balanced_and_profiles(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    assert (
        main(
            [
                "splits",
                "make",
                "balanced",
                "--pool",
                str(pool),
                "--total",
                "41",
                "--out",
                str(tmp_path / "bal.txt"),
            ]
        )
        == 0
    )
    s = split_stats(tmp_path / "bal.txt")
    assert (s.classes, s.max, s.min, s.total) == (4, 10, 10, 40)
    assert (
        main(
            [
                "splits",
                "make",
                "exponential",
                "--pool",
                str(pool),
                "--ratio",
                "10",
                "--keep-class-order",
                "--out",
                str(tmp_path / "exp.txt"),
            ]
        )
        == 0
    )
    counts = [sum(1 for e in read_split(tmp_path / "exp.txt") if e.label == c) for c in range(4)]
    assert counts == [30, 13, 6, 3]  # int(30 * 10 ** (-i / 3))
    assert (
        main(
            [
                "splits",
                "make",
                "pareto",
                "--pool",
                str(pool),
                "--ratio",
                "10",
                "--out",
                str(tmp_path / "par.txt"),
            ]
        )
        == 0
    )
    assert split_stats(tmp_path / "par.txt").max == 30


def test_make_family_and_classes(tmp_path: Path) -> None:
    pool = _pool(tmp_path, per_class=80)
    lt = tmp_path / "lt.txt"
    counts = [60, 20, 8, 2]
    write_split(
        lt,
        [e for e in read_split(pool) if int(e.path.split("_")[1].split(".")[0]) < counts[e.label]],
    )
    pattern = str(tmp_path / "lt{a}.txt")
    assert (
        main(
            [
                "splits",
                "make",
                "family",
                "--long-tailed",
                str(lt),
                "--pool",
                str(pool),
                "--alphas",
                "0.5",
                "0",
                "--out-pattern",
                pattern,
            ]
        )
        == 0
    )
    assert (
        split_stats(tmp_path / "lt0.txt").max == split_stats(tmp_path / "lt0.txt").min == 23
    )  # round(22.5)
    assert (
        main(["splits", "make", "classes", "--split", str(pool), "--out-dir", str(tmp_path)]) == 0
    )
    assert read_class_set(tmp_path / "clsset1.txt") == ["n000", "n001"]
    assert sorted(
        read_class_set(tmp_path / "clsset2.txt") + read_class_set(tmp_path / "clsset2_comp.txt")
    ) == ["n000", "n001", "n002", "n003"]
