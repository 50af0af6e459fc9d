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


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_stats_of_an_empty_split_is_one_line_error(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed a row with ratio nan (exit 0), and --json wrote NaN, which is not JSON."""
    f = tmp_path / "empty.txt"
    f.write_text(text)
    assert main(["splits", "stats", "--json", str(f)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "holds no entries" in err, err


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


def _lt_and_pool(tmp_path: Path) -> tuple[Path, Path]:
    pool = _pool(tmp_path, per_class=80)
    lt = tmp_path / "lt.txt"
    counts = [60, 20, 8, 2]
    write_split(
        lt, [e for e in read_split(pool) if int(e.path.split("_")[1][:-5]) < counts[e.label]]
    )
    return lt, pool


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize(
    ("pattern", "alphas", "fragments"),
    [
        ("fam.txt", ["0.8", "0.6"], ("gives the same file", "for alphas 0.8 and 0.6")),
        ("f{a}.txt", ["0.81", "0.8"], ("same file", "f8.txt")),
        ("f{a}.txt", ["0.4", "0.4"], ("same file",)),
        ("f{b}.txt", ["0.8"], ("unknown placeholder {b}", "{a}", "{alpha}")),
        ("f{}.txt", ["0.8"], ("unknown placeholder {}",)),
        ("f{a.txt", ["0.8"], ("--out-pattern", "valid placeholders")),
    ],
)
def test_family_out_pattern_refused_before_writing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pattern: str,
    alphas: list[str],
    fragments: tuple[str, ...],
) -> None:
    lt, pool = _lt_and_pool(tmp_path)
    before = _snapshot(tmp_path)
    argv = ["splits", "make", "family", "--long-tailed", str(lt), "--pool", str(pool)]
    argv += ["--alphas", *alphas, "--out-pattern", str(tmp_path / pattern)]
    assert main(argv) == 2
    _one_line_error(capsys, *fragments)
    assert _snapshot(tmp_path) == before


def test_family_alpha_placeholder(tmp_path: Path) -> None:
    lt, pool = _lt_and_pool(tmp_path)
    argv = ["splits", "make", "family", "--long-tailed", str(lt), "--pool", str(pool)]
    argv += ["--alphas", "0.5", "0.25", "--out-pattern", str(tmp_path / "x{alpha}.txt")]
    assert main(argv) == 0
    assert (tmp_path / "x0.5.txt").is_file() and (tmp_path / "x0.25.txt").is_file()


def test_stats_one_row_per_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lt, pool = _lt_and_pool(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "train.txt", tmp_path / "b" / "train.txt"
    a.write_bytes(lt.read_bytes())
    b.write_bytes(pool.read_bytes())
    assert main(["splits", "stats", str(a), str(b)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [str(a), str(b)]
    assert [r.split()[4] for r in rows] == ["90", "320"]
    assert main(["splits", "stats", "--json", str(a), str(b)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {str(a), str(b)}


def test_stats_of_a_directory_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["splits", "stats", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory, expected a file")


@pytest.mark.parametrize("kind", ["balanced", "exponential", "pareto", "family"])
def test_empty_pool_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    lt, _ = _lt_and_pool(tmp_path)
    before = _snapshot(tmp_path)
    argv = ["splits", "make", kind, "--pool", str(empty)]
    if kind == "family":
        argv += ["--long-tailed", str(lt), "--out-pattern", str(tmp_path / "f{a}.txt")]
    else:
        argv += ["--out", str(tmp_path / "out.txt")]
    if kind == "balanced":
        argv += ["--total", "8"]
    assert main(argv) == 2
    _one_line_error(capsys, "--pool", "holds no entries")
    assert _snapshot(tmp_path) == before


def test_exponential_impossible_ratio_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(tmp_path, per_class=5, classes=40)
    before = _snapshot(tmp_path)
    argv = ["splits", "make", "exponential", "--pool", str(pool), "--ratio", "1000"]
    assert main([*argv, "--out", str(tmp_path / "e.txt")]) == 2
    _one_line_error(capsys, "--ratio 1000", "without images", "largest possible ratio is 5")
    assert _snapshot(tmp_path) == before


def test_exponential_prints_the_real_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(tmp_path, per_class=115, classes=40)
    out = tmp_path / "e.txt"
    argv = ["splits", "make", "exponential", "--pool", str(pool), "--ratio", "100"]
    assert main([*argv, "--out", str(out)]) == 0
    s = split_stats(out)
    assert s.classes == 40
    printed = capsys.readouterr().out
    assert f"ratio {s.ratio:.1f} (requested 100" in printed
    assert s.ratio == 115.0  # floor(115 / 100) = 1 image in the smallest class


def test_output_replacing_an_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(tmp_path)
    before = _snapshot(tmp_path)
    argv = ["splits", "make", "balanced", "--pool", str(pool), "--total", "8", "--out", str(pool)]
    assert main(argv) == 2
    _one_line_error(capsys, "--out", "also an input")
    assert _snapshot(tmp_path) == before


def test_split_with_bom_comments_and_blanks_makes_clean_outputs(tmp_path: Path) -> None:
    pool = _pool(tmp_path, per_class=3, classes=2)
    messy = tmp_path / "messy.txt"
    messy.write_bytes(
        b"\xef\xbb\xbf# pool\n\n" + pool.read_bytes().replace(b"\n", b"  \r\n") + b"\n"
    )
    out = tmp_path / "bal.txt"
    assert (
        main(
            [
                "splits",
                "make",
                "balanced",
                "--pool",
                str(messy),
                "--per-class",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes() == pool.read_bytes()
    assert (
        main(["splits", "make", "classes", "--split", str(messy), "--out-dir", str(tmp_path / "c")])
        == 0
    )
    assert (tmp_path / "c" / "clsset1.txt").read_bytes() == b"/n000\n"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["splits"], "usage: balfeat splits"),
        (["splits", "make"], "usage: balfeat splits make"),
        (["data"], "usage: balfeat data"),
    ],
)
def test_groups_print_their_own_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert out.startswith(fragment)
    assert "SUBCOMMAND" in out or "KIND" in out


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["balanced", "--total", "500"], ("--total 500 needs 125 images per class", "class 0")),
        (["balanced", "--per-class", "31"], ("--per-class 31 needs 31", "at most --per-class 30")),
        (["balanced", "--total", "3"], ("--total 3 gives 0 images", "at least 4")),
        (["exponential", "--n-max", "40"], ("--n-max 40 is more than the 30 images",)),
        (["pareto", "--n-max", "40", "--keep-class-order"], ("give class 0 40 images",)),
    ],
)
def test_draws_the_pool_cannot_fill_are_refused_in_option_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragments: tuple
) -> None:
    pool = _pool(tmp_path)
    before = _snapshot(tmp_path)
    argv = ["splits", "make", extra[0], "--pool", str(pool), *extra[1:]]
    assert main([*argv, "--out", str(tmp_path / "o.txt")]) == 2
    err = _one_line_error(capsys, *fragments)
    assert "balanced_split" not in err and "long_tail_from_balanced" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["under-a-file", "a-directory", "bom"])
def test_family_outputs_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    lt, pool = _lt_and_pool(tmp_path)
    (tmp_path / "lt8.txt").mkdir()
    pattern = {
        "under-a-file": str(lt / "lt{a}.txt"),
        "a-directory": str(tmp_path / "lt{a}.txt"),
        "bom": str(tmp_path / "\ufefflt{a}.txt"),
    }[where]
    before = _snapshot(tmp_path)
    argv = ["splits", "make", "family", "--long-tailed", str(lt), "--pool", str(pool)]
    assert main([*argv, "--out-pattern", pattern]) == 2
    _one_line_error(capsys, "--out-pattern", "nothing was written" if where != "bom" else "BOM")
    assert _snapshot(tmp_path) == before
