"""Split files and class-set files, read and written exactly as the reference code writes them.

A split file holds one ``path label`` per line and ends with a newline::

    /n01440764/n01440764_10027.JPEG 0            train lists (relative to ImageNet train/)
    train/n01440764/n01440764_762.JPEG 0         ImageNet-LT val (relative to the ImageNet root)
    val/n01440764/ILSVRC2012_val_00029930.JPEG 0 ImageNet-LT test
    train_val2018/Plantae/7291/9f8e...jpg 7291   iNaturalist 2018 (the label is the class id)

A class-set file holds one ``/n01440764`` per line. Reading then writing a file gives back the same
bytes (for files as the reference writes them). The class of an entry is the name of the folder
holding the image (the synset for ImageNet, the class id for iNaturalist).

Every reader here accepts, in split and class-set files alike: a UTF-8 byte-order mark at the start
(never kept: it would end up in an image path), blank or whitespace-only lines, Windows line ends,
trailing spaces after the label, and comment lines whose first non-blank character is ``#``. These
are dropped on reading, so a file written back holds only the entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from balfeat.atomic import atomic_write_text
from balfeat.errors import SplitFormatError

#: A class with more than this many training images is "many-shot" (classifier-balancing protocol).
MANY_SHOT_MIN = 100
#: A class with fewer than this many training images is "few-shot".
FEW_SHOT_MAX = 20


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: an image path (as written in the file) and its integer label."""

    path: str
    label: int

    @property
    def class_name(self) -> str:
        """The folder holding the image: ``n01440764`` for ImageNet, ``7291`` for iNaturalist."""
        parts = [p for p in self.path.split("/") if p]
        return parts[-2] if len(parts) >= 2 else ""

    def resolve(self, root: str | os.PathLike[str]) -> Path:
        """The image file under ``root`` (a leading slash in the split path is relative too)."""
        return Path(root) / self.path.lstrip("/")

    def to_line(self) -> str:
        """The line as the reference writes it, without the newline."""
        return f"{self.path} {self.label}"


#: The UTF-8 byte-order mark some editors put at the start of a text file.
BOM = "\ufeff"


def _content_lines(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    """``(line number, text)`` of the lines that carry content: without the newline, a leading
    BOM on the first line and trailing white space; blank lines and ``#`` comments are skipped."""
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if lineno == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        yield lineno, line


def read_text_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file, with their line ends (``\\n`` or ``\\r\\n``) kept.

    Raises:
        SplitFormatError: the file is not UTF-8 (e.g. saved as Latin-1 or UTF-16), naming the
            line and the byte that does not decode.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise SplitFormatError(
            f"{path}:{line}: byte {data[err.start]:#04x} is not UTF-8 text{hint}; save the file "
            "as UTF-8 (image paths with non-ASCII names must be UTF-8 encoded)"
        ) from None
    # split at "\n" only, as open(newline="\n") does: "\r" stays and is stripped with the line
    parts = text.split("\n")
    return [ln + "\n" for ln in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def parse_split_lines(
    lines: Iterable[str],
    source: str = "<split>",
    num_classes: int | None = None,
    allow_duplicates: bool = False,
) -> list[SplitEntry]:
    """Parse ``path label`` lines (with or without their newlines).

    Blank lines, ``#`` comments, a leading BOM and trailing white space are skipped (see the
    module docstring); line numbers in errors count every line of the file.

    Args:
        lines: the lines of a split file.
        source: the file name used in error messages.
        num_classes: when given, a label ``>= num_classes`` is an error.
        allow_duplicates: accept a path listed twice (off: the reference never does that and a
            repeated line usually means two files were concatenated by mistake).

    Raises:
        SplitFormatError: naming ``source:line`` for a line without a label, a non-integer or
            negative label, a label out of range, or a duplicated entry.
    """
    entries: list[SplitEntry] = []
    seen: dict[str, int] = {}
    for lineno, line in _content_lines(lines):
        where = f"{source}:{lineno}"
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1]:
            raise SplitFormatError(
                f"{where}: expected 'path label' (e.g. '/n01440764/x.JPEG 0'), got {line!r}; "
                "every line needs an image path, one space and an integer class label"
            )
        path, label_text = parts
        if BOM in path:
            raise SplitFormatError(f"{where}: byte-order mark inside the path {path!r}; remove it")
        try:
            # int() also reads '1_000' (as 1000) and non-ASCII digits: a label is ASCII digits
            if not label_text.lstrip("+-").isascii() or "_" in label_text:
                raise ValueError(label_text)
            label = int(label_text)
        except ValueError:
            raise SplitFormatError(
                f"{where}: label {label_text!r} is not an integer (line {line!r}); "
                "labels are class ids 0..C-1"
            ) from None
        if label < 0:
            raise SplitFormatError(f"{where}: negative label {label} (line {line!r})")
        if label >= 2**63:  # no array of labels (int64) holds it
            raise SplitFormatError(
                f"{where}: label {label_text} is too large for a class id (line {line!r}); "
                "labels are class ids 0..C-1"
            )
        if num_classes is not None and label >= num_classes:
            raise SplitFormatError(
                f"{where}: label {label} >= num_classes={num_classes} (line {line!r}); "
                "pass the right number of classes or fix the file"
            )
        if not allow_duplicates:
            first = seen.setdefault(path, lineno)
            if first != lineno:
                raise SplitFormatError(
                    f"{where}: {path!r} is listed twice (first at line {first}); remove one, "
                    "or pass allow_duplicates=True if the repeat is intended"
                )
        entries.append(SplitEntry(path, label))
    return entries


def read_split(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    allow_duplicates: bool = False,
) -> list[SplitEntry]:
    """Read a split file; see :func:`parse_split_lines` for the checks and errors."""
    return parse_split_lines(read_text_lines(path), str(path), num_classes, allow_duplicates)


def _check_writable(index: int, entry: SplitEntry) -> None:
    """Refuse an entry that :func:`read_split` would not read back as it was given."""
    where = f"split entry {index}"
    path, label = entry.path, entry.label
    if not isinstance(path, str) or not path.strip():
        raise SplitFormatError(f"{where}: path must be a non-empty string, got {path!r}")
    if any(ch in path for ch in "\n\r") or BOM in path:
        raise SplitFormatError(
            f"{where}: path {path!r} holds a line break or byte-order mark; a split line is "
            "'path label' on one line"
        )
    if path != path.strip() or path.startswith("#"):
        raise SplitFormatError(
            f"{where}: path {path!r} starts/ends with white space or starts with '#'; it would "
            "read back changed (or as a comment): rename it"
        )
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
        raise SplitFormatError(
            f"{where}: label {label!r} of {path!r} must be an integer class id >= 0"
        )


def format_split(entries: Iterable[SplitEntry]) -> str:
    """The text of a split file: one ``path label`` per line, trailing newline.

    Raises:
        SplitFormatError: an entry that would not read back as given (a path with a line break,
            leading/trailing white space or a leading ``#``; a label that is not an integer
            ``>= 0``), naming its index.
    """
    lines = []
    for i, e in enumerate(entries):
        _check_writable(i, e)
        lines.append(f"{e.path} {int(e.label)}\n")
    return "".join(lines)


def write_split(path: str | os.PathLike[str], entries: Iterable[SplitEntry]) -> None:
    """Write a split file atomically, in the reference's format (one ``path label`` a line)."""
    atomic_write_text(path, format_split(entries))


def read_class_set(path: str | os.PathLike[str]) -> list[str]:
    """Read a class-set file (``/n01440764`` per line) and return the names without the slash.

    Blank lines, ``#`` comments and a leading BOM are skipped (see the module docstring).

    Raises:
        SplitFormatError: a line with spaces, a byte-order mark, a class listed twice, or a file
            without any class.
    """
    return [name for _, name in read_class_set_lines(path)]


def read_class_set_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """:func:`read_class_set` with the line number of each name: ``[(line, name), ...]``."""
    path = Path(path)
    names: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for lineno, line in _content_lines(read_text_lines(path)):
        line = line.strip()
        name = line[1:] if line.startswith("/") else line
        if not name or " " in name or "/" in name or BOM in name:
            raise SplitFormatError(
                f"{path}:{lineno}: expected one class folder like '/n01440764', got {line!r}"
            )
        first = seen.setdefault(name, lineno)
        if first != lineno:
            raise SplitFormatError(
                f"{path}:{lineno}: class {name!r} listed twice (first at line {first})"
            )
        names.append((lineno, name))
    if not names:  # an empty class set selects nothing: every later step would fail vaguely
        raise SplitFormatError(
            f"class-set file {str(path)!r} lists no class (it is empty or only blank lines and "
            "# comments); give one '/class_folder' per line"
        )
    return names


def write_class_set(path: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Write a class-set file atomically: ``/name`` per line (a leading slash is not doubled).

    Raises:
        SplitFormatError: a name that would not read back (not a string, empty, with a line
            break or surrounding white space), naming its index.
    """
    lines = []
    for i, name in enumerate(names):
        bare = name.lstrip("/") if isinstance(name, str) else ""
        if not bare or bare != bare.strip() or any(ch in bare for ch in "\n\r") or BOM in bare:
            raise SplitFormatError(
                f"class name {i} ({name!r}) would not read back from a class-set file: give a "
                "non-empty folder name without line breaks or surrounding white space"
            )
        lines.append(f"/{bare}\n")
    atomic_write_text(path, "".join(lines))


def class_names_of(entries: Sequence[SplitEntry], source: str = "<split>") -> dict[int, str]:
    """Map each label to its class folder name, checking that the two agree.

    Raises:
        SplitFormatError: a label used for two folders, or a folder with two labels.
    """
    by_label: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for e in entries:
        name = e.class_name
        old = by_label.setdefault(e.label, name)
        if old != name:
            raise SplitFormatError(
                f"{source}: label {e.label} is used for folders {old!r} and {name!r} "
                f"(at {e.path!r}); each label must name one class folder"
            )
        old_label = by_name.setdefault(name, e.label)
        if old_label != e.label:
            raise SplitFormatError(
                f"{source}: folder {name!r} has labels {old_label} and {e.label} (at {e.path!r})"
            )
    return dict(sorted(by_label.items()))


def labels_of(entries: Sequence[SplitEntry]) -> np.ndarray:
    """The labels as an int64 array. Shape: (N,)."""
    return np.fromiter((e.label for e in entries), dtype=np.int64, count=len(entries))


@dataclass(frozen=True)
class SplitStats:
    """Per-class image counts of a split summarised as in the paper's tables."""

    classes: int
    max: int
    min: int
    total: int
    ratio: float
    many: int
    medium: int
    few: int

    def to_dict(self) -> dict[str, int | float]:
        """A JSON-serialisable dict."""
        return asdict(self)


def split_stats(
    entries: Sequence[SplitEntry] | str | os.PathLike[str],
    many_min: int = MANY_SHOT_MIN,
    few_max: int = FEW_SHOT_MAX,
) -> SplitStats:
    """Classes, max/min/total images per class, imbalance ratio and many/medium/few class counts.

    A class is many-shot with more than ``many_min`` images, few-shot with fewer than ``few_max``
    and medium otherwise. Only classes present in the split are counted.
    """
    if isinstance(entries, (str, os.PathLike)):
        entries = read_split(entries, allow_duplicates=True)
    if not entries:
        return SplitStats(0, 0, 0, 0, float("nan"), 0, 0, 0)
    counts = np.bincount(labels_of(entries))
    counts = counts[counts > 0]
    hi, lo = int(counts.max()), int(counts.min())
    return SplitStats(
        classes=len(counts),
        max=hi,
        min=lo,
        total=int(counts.sum()),
        ratio=hi / lo,
        many=int((counts > many_min).sum()),
        medium=int(((counts >= few_max) & (counts <= many_min)).sum()),
        few=int((counts < few_max).sum()),
    )


def split_stats_json(stats: dict[str, SplitStats]) -> str:
    """``{name: stats}`` as indented JSON."""
    return json.dumps({k: v.to_dict() for k, v in stats.items()}, indent=2)


def read_class_counts(
    path: str | os.PathLike[str], num_classes: int, key: str = "counts file"
) -> list[int]:
    """Images per class from a split file (``path label`` lines: the labels are counted) or a
    counts file (one non-negative integer per line, in class order). A BOM, blank lines and
    ``#`` comments are skipped in both.

    Args:
        path: the file.
        num_classes: C; a counts file must give exactly C counts.
        key: how the file was given (``--group-counts``, ``groups``), for error messages.

    Raises:
        DataError: neither form, a negative count, or not ``num_classes`` classes.
    """
    from balfeat.errors import BalfeatError, DataError

    numbered = [(n, v.split("#", 1)[0].strip()) for n, v in _content_lines(read_text_lines(path))]
    values = [v for _, v in numbered]
    if not values:  # all classes would count 0: every class few-shot, without a word
        raise DataError(
            f"{key} {str(path)!r} holds no counts (only blank lines or # comments); give one "
            f"count per class ({num_classes} lines) or a split file"
        )
    if all(" " not in v for v in values):  # no 'path label' line: meant as a counts file
        for lineno, v in numbered:
            if not v.isdigit():
                raise DataError(
                    f"{key} {str(path)!r}:{lineno}: {v!r} is not a count; a counts file has one "
                    "non-negative integer (images of that class) per line, in class order"
                )
    if all(v.isdigit() for v in values):  # a counts file (inline # comments allowed)
        counts = [int(v) for v in values]
    else:
        try:
            labels = labels_of(read_split(path))
        except BalfeatError as err:
            raise DataError(
                f"{key} {str(path)!r} is neither a split file ('path label' lines) nor a counts "
                f"file (one non-negative integer per line): {err}"
            ) from None
        if len(labels) and int(labels.max()) >= num_classes:
            raise DataError(
                f"{key} {str(path)!r} has label {int(labels.max())}, but there are only "
                f"{num_classes} classes"
            )
        counts = np.bincount(labels, minlength=num_classes).tolist()
    if len(counts) != num_classes:
        raise DataError(
            f"{key} {str(path)!r} gives {len(counts)} classes, expected {num_classes} (one count "
            "per class, in class order)"
        )
    return [int(c) for c in counts]
