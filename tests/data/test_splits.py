from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balfeat.data.splits import (
    SplitEntry,
    class_names_of,
    format_split,
    parse_split_lines,
    read_class_set,
    read_split,
    split_stats,
    write_class_set,
    write_split,
)
from balfeat.errors import SplitFormatError


def test_read_formats(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text(
        "/n01440764/n01440764_10027.JPEG 0\n"
        "train/n01443537/n01443537_762.JPEG 1\n"
        "val/n01484850/ILSVRC2012_val_00029930.JPEG 2\n"
        "train_val2018/Plantae/7291/9f8ecb39.jpg 7291\n"
    )
    entries = read_split(f)
    assert entries[0] == SplitEntry("/n01440764/n01440764_10027.JPEG", 0)
    assert [e.class_name for e in entries] == ["n01440764", "n01443537", "n01484850", "7291"]
    assert entries[0].resolve("/data/train") == Path("/data/train/n01440764/n01440764_10027.JPEG")
    assert entries[3].label == 7291
    assert class_names_of(entries) == {0: "n01440764", 1: "n01443537", 2: "n01484850", 7291: "7291"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("/a/x.JPEG 0\n/a/y.JPEG\n", "s.txt:2"),
        ("/a/x.JPEG 0\n/a/y.JPEG zero\n", "not an integer"),
        ("/a/x.JPEG -1\n", "negative"),
        ("/a/x.JPEG 0\n/b/y.JPEG 5\n", "num_classes=3"),
        ("/a/x.JPEG 0\n/a/y.JPEG 0\n/a/x.JPEG 0\n", "listed twice (first at line 1)"),
        ("# header\n\n/a/x.JPEG 0\n/a/y.JPEG z\n", "s.txt:4"),
    ],
)
def test_malformed_lines(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "s.txt"
    f.write_text(text)
    with pytest.raises(SplitFormatError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_split(f, num_classes=3)


def test_error_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("/a/x.JPEG 0\n/a/y.JPEG 0\n/a/z.JPEG 1.5\n")
    with pytest.raises(SplitFormatError) as info:
        read_split(f)
    assert f"{f}:3" in str(info.value)


def test_duplicates_allowed_when_asked() -> None:
    entries = parse_split_lines(["/a/x 0", "/a/x 0"], allow_duplicates=True)
    assert len(entries) == 2


def test_inconsistent_class_names() -> None:
    with pytest.raises(SplitFormatError, match="label 0"):
        class_names_of([SplitEntry("/a/x.JPEG", 0), SplitEntry("/b/y.JPEG", 0)])
    with pytest.raises(SplitFormatError, match="folder 'a'"):
        class_names_of([SplitEntry("/a/x.JPEG", 0), SplitEntry("/a/y.JPEG", 1)])


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    entries = [SplitEntry("/n1/a.JPEG", 0), SplitEntry("/n2/b.JPEG", 1)]
    out = tmp_path / "sub" / "out.txt"
    write_split(out, entries)
    assert out.read_bytes() == b"/n1/a.JPEG 0\n/n2/b.JPEG 1\n"
    assert read_split(out) == entries
    assert [p.name for p in out.parent.iterdir()] == ["out.txt"]  # no temp file left


def test_class_set_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("/n01440764\n/n01443537\n")
    assert read_class_set(f) == ["n01440764", "n01443537"]
    write_class_set(tmp_path / "d.txt", read_class_set(f))
    assert (tmp_path / "d.txt").read_bytes() == f.read_bytes()
    f.write_text("/n01440764\n/n01440764\n")
    with pytest.raises(SplitFormatError, match="listed twice"):
        read_class_set(f)
    f.write_text("/n01440764 0\n")
    with pytest.raises(SplitFormatError, match=":1"):
        read_class_set(f)


def test_split_stats_thresholds() -> None:
    entries = [
        SplitEntry(f"/c{c}/{i}.jpg", c) for c, n in enumerate([101, 100, 20, 19]) for i in range(n)
    ]
    s = split_stats(entries)
    assert (s.classes, s.max, s.min, s.total) == (4, 101, 19, 240)
    assert (s.many, s.medium, s.few) == (1, 2, 1)
    assert s.ratio == pytest.approx(101 / 19)


def test_reference_files_round_trip_byte_identical(reference_splits: Path, tmp_path: Path) -> None:
    for name in (
        "imagenet_lt8_train.txt",
        "imagenet_longtail_val.txt",
        "imagenet_longtail_test.txt",
        "iNaturalist18_val.txt",
    ):
        src = reference_splits / name
        write_split(tmp_path / name, read_split(src))
        assert (tmp_path / name).read_bytes() == src.read_bytes(), name
    for name in ("imagenet_clsset1.txt", "imagenet_clsset2_comp.txt", "imagenet_clsfull.txt"):
        src = reference_splits / name
        write_class_set(tmp_path / name, read_class_set(src))
        assert (tmp_path / name).read_bytes() == src.read_bytes(), name


def test_reference_class_names(reference_splits: Path) -> None:
    names = class_names_of(read_split(reference_splits / "imagenet_longtail_test.txt"))
    full = read_class_set(reference_splits / "imagenet_clsfull.txt")
    assert list(names.values()) == full


_path = st.from_regex(r"(/|train/|val/)?n[0-9]{3}/[A-Za-z0-9_.-]{1,12}", fullmatch=True)


@given(st.lists(st.tuples(_path, st.integers(0, 10**6)), max_size=30, unique_by=lambda t: t[0]))
@settings(max_examples=60, deadline=None)
def test_parse_format_round_trip(items: list[tuple[str, int]]) -> None:
    entries = [SplitEntry(p, label) for p, label in items]
    text = format_split(entries)
    assert parse_split_lines(text.splitlines(keepends=True)) == entries
    assert format_split(parse_split_lines(text.splitlines())) == text


MESSY = "\ufeff# made by hand\n\n/a/x.JPEG 0\r\n  # a comment\n/b/y.JPEG 1  \n\n \n"


def test_bom_comments_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "messy.txt"
    f.write_bytes(MESSY.encode("utf-8"))
    entries = read_split(f)
    assert entries == [SplitEntry("/a/x.JPEG", 0), SplitEntry("/b/y.JPEG", 1)]
    out = tmp_path / "clean.txt"
    write_split(out, entries)
    assert out.read_bytes() == b"/a/x.JPEG 0\n/b/y.JPEG 1\n"  # no BOM copied into a path


def test_bom_only_at_start_is_a_bom(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("/a/x.JPEG 0\n\ufeff/a/y.JPEG 0\n", encoding="utf-8")
    with pytest.raises(SplitFormatError, match=r"s\.txt:2: byte-order mark"):
        read_split(f)


def test_class_set_accepts_bom_comments_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_bytes("\ufeff# classes\n/n01440764\r\n\n/n01443537 \n".encode())
    assert read_class_set(f) == ["n01440764", "n01443537"]
    write_class_set(tmp_path / "d.txt", read_class_set(f))
    assert (tmp_path / "d.txt").read_bytes() == b"/n01440764\n/n01443537\n"


def test_read_class_counts_from_a_counts_or_a_split_file(tmp_path: Path) -> None:
    from balfeat.data.splits import read_class_counts
    from balfeat.errors import DataError

    counts = tmp_path / "counts.txt"
    counts.write_text("\ufeff# per class\n5\n3  # tail\n\n0\n")
    assert read_class_counts(counts, 3) == [5, 3, 0]
    split = tmp_path / "split.txt"
    split.write_text("a.jpg 0\nb.jpg 2\nc.jpg 2\n")
    assert read_class_counts(split, 4) == [1, 0, 2, 0]
    with pytest.raises(DataError, match=r"groups file .* gives 3 classes, expected 4"):
        read_class_counts(counts, 4, "groups file")
    with pytest.raises(DataError, match="has label 2, but there are only 2 classes"):
        read_class_counts(split, 2)
    bad = tmp_path / "bad.txt"
    bad.write_text("5\n-1\n")
    with pytest.raises(DataError, match=r"bad\.txt':2: '-1' is not a count"):
        read_class_counts(bad, 2, "--group-counts")
    bad.write_text("5\nx.jpg 1\n")
    with pytest.raises(DataError, match="neither a split file"):
        read_class_counts(bad, 2, "--group-counts")


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (SplitEntry("a/b.png", -1), "label -1 of 'a/b.png'"),
        (SplitEntry("a/b.png", 1.5), "label 1.5"),  # type: ignore[arg-type]
        (SplitEntry("a\nb.png", 0), "line break"),
        (SplitEntry(" a/b.png", 0), "white space"),
        (SplitEntry("#a/b.png", 0), "starts with '#'"),
        (SplitEntry("", 0), "non-empty"),
    ],
)
def test_write_split_refuses_entries_that_would_not_read_back(
    tmp_path: Path, entry: SplitEntry, match: str
) -> None:
    """Before: written as is; read_split then refused the file (or read a comment, or two lines)."""
    with pytest.raises(SplitFormatError, match=match):
        write_split(tmp_path / "s.txt", [SplitEntry("ok/x.png", 0), entry])
    assert not (tmp_path / "s.txt").exists()


@pytest.mark.parametrize("name", ["", "/", "a\nb", " a", 3])
def test_write_class_set_refuses_names_that_would_not_read_back(
    tmp_path: Path, name: object
) -> None:
    """Before: written as is (an empty line, two lines, or a TypeError for a non-string)."""
    with pytest.raises(SplitFormatError, match="would not read back"):
        write_class_set(tmp_path / "c.txt", ["ok", name])  # type: ignore[list-item]


def test_a_label_beyond_64_bits_is_a_format_error(tmp_path: Path) -> None:
    """It used to pass the reader and fail as a raw OverflowError in the label array."""
    f = tmp_path / "s.txt"
    f.write_text("/a/x.jpg 0\n/a/y.jpg " + "9" * 25 + "\n")
    with pytest.raises(SplitFormatError, match=r"s\.txt:2: label 9+ is too large for a class id"):
        read_split(f)
