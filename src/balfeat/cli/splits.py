"""``balfeat splits``: statistics of split files and generators of imbalanced splits."""

from __future__ import annotations

import argparse
import json
import os
import string
from pathlib import Path
from typing import TYPE_CHECKING

from balfeat.cli.argtypes import float_in, int_in, path_of
from balfeat.cli.groups import add_group
from balfeat.engine.run_dir import refuse_existing_files, replacing_files
from balfeat.errors import ConfigError, DataError

if TYPE_CHECKING:
    from balfeat.data.splits import SplitEntry, SplitStats

#: The placeholders of ``--out-pattern``, with what each stands for.
PATTERN_FIELDS = {"a": "10*alpha rounded, e.g. 8", "alpha": "alpha as given, e.g. 0.8"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat splits`` with its ``stats`` and ``make`` subcommands."""
    sub = add_group(
        subparsers,
        "splits",
        help="inspect split files and make splits of controlled imbalance",
        description="Inspect split files (one 'path label' per line) and make new ones.",
    )

    stats = sub.add_parser(
        "stats",
        help="classes, max/min/total images per class, imbalance ratio, many/medium/few",
        description=(
            "Print one row per split file: classes, max/min/total images per class, the "
            "imbalance ratio max/min and the number of many (>100), medium (20-100) and few "
            "(<20) shot classes."
        ),
    )
    stats.add_argument(
        "files", nargs="+", metavar="FILE", type=path_of("file"), help="split files to summarise"
    )
    stats.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: a table)"
    )
    stats.set_defaults(func=run_stats)

    make = sub.add_parser(
        "make",
        help="write a new split file",
        description=(
            "Write new split files: the paper's LT-alpha family, a balanced split, an "
            "exponential or Pareto long-tailed subsample, or two 50%% class halves."
        ),
    )
    kinds = make.add_subparsers(dest="make_kind", metavar="KIND")

    fam = kinds.add_parser(
        "family",
        help="the paper's nested LT-alpha family from a long-tailed split and a pool",
        description=(
            "Write LT<10*alpha> splits whose class counts are the long-tailed counts smoothed "
            "by n_c^alpha (total kept), nested: each drawn from the previous, more skewed one."
        ),
    )
    fam.add_argument(
        "--long-tailed",
        required=True,
        type=path_of("file"),
        help="the most skewed split (ImageNet-LT)",
    )
    fam.add_argument(
        "--pool", required=True, type=path_of("file"), help="a split listing every usable image"
    )
    fam.add_argument(
        "--balanced",
        default=None,
        type=path_of("file"),
        help="balanced split preferred for top-ups (default: none)",
    )
    fam.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        type=path_of("file"),
        help="held-out split files whose images are never used (default: none; pass val/test)",
    )
    fam.add_argument(
        "--alphas",
        type=float_in(ge=0, le=1),
        nargs="+",
        default=[0.8, 0.6, 0.4, 0.2],
        help="smoothing exponents in [0, 1] (default: 0.8 0.6 0.4 0.2, the paper's LT8..LT2)",
    )
    fam.add_argument(
        "--out-pattern",
        default="lt{a}_train.txt",
        help="output file name; {a} is 10*alpha rounded, {alpha} the exponent as given; each "
        "alpha must give its own file (default: lt{a}_train.txt)",
    )
    _common(fam)
    fam.set_defaults(func=run_family)

    bal = kinds.add_parser(
        "balanced",
        help="floor(total/C) random images per class (LT0)",
        description="Draw the same number of random images from every class of a pool (LT0).",
    )
    bal.add_argument(
        "--pool", required=True, type=path_of("file"), help="split listing the images to draw from"
    )
    group = bal.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--total", type=int_in(ge=1), help="total images (e.g. 115000 for ImageNet-100k)"
    )
    group.add_argument("--per-class", type=int_in(ge=1), help="images per class")
    bal.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        type=path_of("file"),
        help="held-out splits (default: none)",
    )
    bal.add_argument("--out", required=True, type=path_of("new_file"), help="output split file")
    _common(bal)
    bal.set_defaults(func=run_balanced)

    for kind, helptext in (
        ("exponential", "CIFAR-LT style exponential profile n_max*ratio^(-i/(C-1))"),
        ("pareto", "power-law profile n_max*(i+1)^(-shape), shape from the ratio"),
    ):
        p = kinds.add_parser(
            kind,
            help=f"subsample a pool to a {helptext}",
            description=f"Subsample a pool to a {helptext}; every class keeps >= 1 image.",
        )
        p.add_argument(
            "--pool",
            required=True,
            type=path_of("file"),
            help="split listing the images to draw from",
        )
        p.add_argument(
            "--n-max",
            type=int_in(ge=1),
            default=None,
            help="images of the largest class (default: the smallest class size of the pool)",
        )
        p.add_argument(
            "--ratio",
            type=float_in(ge=1),
            default=100.0,
            help="imbalance ratio n_max/n_min, >= 1 (default: 100); the ratio written is printed",
        )
        p.add_argument(
            "--keep-class-order",
            action="store_true",
            help="give the largest count to label 0 (default: a seeded random class order)",
        )
        p.add_argument("--out", required=True, type=path_of("new_file"), help="output split file")
        _common(p)
        p.set_defaults(func=run_profile, profile=kind)

    cls = kinds.add_parser(
        "classes",
        help="two 50%% class splits and complements (clsset*)",
        description="Write two random halves of the classes and their complements (clsset*).",
    )
    cls.add_argument(
        "--split",
        required=True,
        type=path_of("file"),
        help="split (or class-set file) naming the classes",
    )
    cls.add_argument(
        "--out-dir",
        required=True,
        type=path_of("out_dir"),
        help="directory for clsset{1,2}[_comp].txt",
    )
    cls.add_argument("--prefix", default="", help="prefix of the file names (default: none)")
    _common(cls)
    cls.set_defaults(func=run_classes)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="replace output files that exist "
                   "(default: off: an existing output is refused before any work)")  # fmt: skip
    p.add_argument(
        "--seed",
        type=int_in(ge=0),
        default=0,
        help="random seed, >= 0 (default: 0); change for another draw",
    )


def _fmt_row(name: str, s: SplitStats) -> list[str]:
    return [
        name,
        f"{s.classes:,}",
        f"{s.max:,}",
        f"{s.min:,}",
        f"{s.total:,}",
        f"{s.ratio:.1f}",
        f"{s.many:,}",
        f"{s.medium:,}",
        f"{s.few:,}",
    ]


def row_names(files: list[str]) -> list[str]:
    """One name per file for the rows: the file stem when stems are unique, else the path as
    given (``a/train.txt`` and ``b/train.txt`` are two rows, not one)."""
    stems = [Path(f).stem for f in files]
    return stems if len(set(stems)) == len(stems) else list(files)


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of each split file, one row per file."""
    from balfeat.data.splits import split_stats

    files = list(dict.fromkeys(args.files))  # a file named twice is one row
    rows_stats = [(name, split_stats(f)) for name, f in zip(row_names(files), files, strict=True)]
    for f, (_, stats) in zip(files, rows_stats, strict=True):
        if stats.total == 0:  # no ratio (NaN, which --json wrote and JSON does not have)
            raise DataError(f"{f}: the split holds no entries; give one 'path label' per line")
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in rows_stats}, indent=2))
        return 0
    header = ["split", "classes", "max", "min", "total", "ratio", "many", "medium", "few"]
    rows = [header] + [_fmt_row(k, v) for k, v in rows_stats]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    return 0


def _read_entries(path: str, option: str) -> list[SplitEntry]:
    """Read the split of ``option``; an empty one (only blank lines or comments) is an error."""
    from balfeat.data.splits import read_split

    entries = read_split(path)
    if not entries:
        raise DataError(
            f"{option} {path}: the split holds no entries (only blank lines or # comments); "
            "pass a split with one 'path label' per line"
        )
    return entries


def _read_many(files: list[str]) -> list[SplitEntry]:
    from balfeat.data.splits import read_split

    return [e for f in files for e in read_split(f)]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_outputs(outs: dict[str, str], inputs: list[str | None], force: bool) -> None:
    """Refuse, before any work, an output that is not writable, exists, or replaces an input.

    Args:
        outs: output path -> the option that names it.
        inputs: the input files of the command (``None`` for options not given).
        force: ``--force``: outputs that exist may be replaced.
    """
    from balfeat.typed_config import check_path

    for out, option in outs.items():
        if "\ufeff" in out or "\x00" in out:
            raise ConfigError(f"{option}: the path {out!r} holds a BOM or NUL character")
        try:
            check_path(option, out, "new_file")
        except ConfigError as err:
            raise ConfigError(f"{err}; nothing was written") from None
        for src in inputs:
            if src is not None and _same_file(out, src):
                raise ConfigError(
                    f"{option}: {out!r} is also an input of this command; writing it would "
                    "replace the input - choose another output path"
                )
    refuse_existing_files(outs, force)


def family_outputs(pattern: str, alphas: list[float]) -> dict[float, Path]:
    """The output file of each alpha under ``--out-pattern``, checked before anything is written.

    Raises:
        ConfigError: an unknown placeholder or a malformed pattern, or two alphas that give the
            same file (a pattern without ``{a}``, or alphas equal after rounding).
    """
    valid = ", ".join(f"{{{k}}} ({v})" for k, v in PATTERN_FIELDS.items())
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as err:
        raise ConfigError(
            f"--out-pattern {pattern!r}: {err}; valid placeholders: {valid}"
        ) from None
    for f in fields:
        if f not in PATTERN_FIELDS:
            raise ConfigError(
                f"--out-pattern {pattern!r}: unknown placeholder {{{f}}}; valid placeholders: "
                f"{valid}"
            )
    outs: dict[float, Path] = {}
    seen: dict[Path, float] = {}
    for alpha in alphas:
        try:
            out = Path(pattern.format(a=round(alpha * 10), alpha=f"{alpha:g}"))
        except (ValueError, IndexError, KeyError) as err:
            raise ConfigError(
                f"--out-pattern {pattern!r}: cannot format it ({err}); valid placeholders: {valid}"
            ) from None
        if out in seen:
            raise ConfigError(
                f"--out-pattern {pattern!r} gives the same file {str(out)!r} for alphas "
                f"{seen[out]:g} and {alpha:g}; put {{a}} or {{alpha}} in it (or drop the "
                "repeated alpha) - nothing was written"
            )
        seen[out] = alpha
        outs[alpha] = out
    return outs


def _describe(out: object, s: SplitStats) -> str:
    return (
        f"{out}: {s.classes:,} classes, max {s.max:,}, min {s.min:,}, total {s.total:,}, "
        f"ratio {s.ratio:.1f}"
    )


def run_family(args: argparse.Namespace) -> int:
    """Write the LT-alpha family."""
    from balfeat.data.imbalance import imbalance_family
    from balfeat.data.splits import read_split, split_stats, write_split

    outs = family_outputs(args.out_pattern, args.alphas)
    _check_outputs(
        {str(p): "--out-pattern" for p in outs.values()},
        [args.long_tailed, args.pool, args.balanced, *args.exclude],
        args.force,
    )
    family = imbalance_family(
        _read_entries(args.long_tailed, "--long-tailed"),
        _read_entries(args.pool, "--pool"),
        alphas=args.alphas,
        balanced=read_split(args.balanced) if args.balanced else None,
        exclude=_read_many(args.exclude),
        seed=args.seed,
    )
    for alpha, entries in family.items():
        with replacing_files([outs[alpha]], "--out-pattern"):
            write_split(outs[alpha], entries)
        print(_describe(outs[alpha], split_stats(entries)))
    return 0


def run_balanced(args: argparse.Namespace) -> int:
    """Write a balanced split."""
    from balfeat.data.imbalance import balanced_split
    from balfeat.data.splits import split_stats, write_split

    _check_outputs({args.out: "--out"}, [args.pool, *args.exclude], args.force)
    pool = _read_entries(args.pool, "--pool")
    _check_balanced_fits(pool, _read_many(args.exclude), args.total, args.per_class)
    entries = balanced_split(
        pool,
        total=args.total,
        per_class=args.per_class,
        exclude=_read_many(args.exclude),
        seed=args.seed,
    )
    with replacing_files([args.out], "--out"):
        write_split(args.out, entries)
    s = split_stats(entries)
    print(f"{args.out}: {s.classes:,} classes x {s.max:,} images, total {s.total:,}")
    return 0


def _check_balanced_fits(
    pool: list[SplitEntry], exclude: list[SplitEntry], total: int | None, per_class: int | None
) -> None:
    """Refuse, in the options' terms, a balanced split the pool cannot fill."""
    from balfeat.data.imbalance import group_by_label, image_key

    held_out = {image_key(e.path) for e in exclude}
    groups = group_by_label(e for e in pool if image_key(e.path) not in held_out)
    if not groups:
        raise DataError("--pool: every image of the pool is in an --exclude split; nothing left")
    smallest = min(groups, key=lambda c: len(groups[c]))
    have = len(groups[smallest])
    k = per_class if per_class is not None else int(total or 0) // len(groups)
    if k < 1:
        raise DataError(
            f"--total {total} gives 0 images to each of the pool's {len(groups)} classes; "
            f"give at least {len(groups)} - nothing was written"
        )
    if k > have:
        option = f"--per-class {per_class}" if per_class is not None else f"--total {total}"
        most = f"--per-class {have}" if per_class is not None else f"--total {have * len(groups)}"
        raise DataError(
            f"{option} needs {k:,} images per class but class {smallest} has only {have:,} "
            f"usable images in --pool; at most {most} - nothing was written"
        )


def run_profile(args: argparse.Namespace) -> int:
    """Write an exponential or Pareto long-tailed subsample of a pool.

    The ratio printed is the one of the written split (counts are whole images, so it can differ
    from ``--ratio``); a ratio that would leave a class without images is refused.
    """
    from balfeat.data.imbalance import (
        exponential_counts,
        group_by_label,
        long_tail_from_balanced,
        pareto_counts,
    )
    from balfeat.data.splits import split_stats, write_split

    _check_outputs({args.out: "--out"}, [args.pool], args.force)
    pool = _read_entries(args.pool, "--pool")
    groups = group_by_label(pool)
    smallest = min(len(g) for g in groups.values())
    n_max = args.n_max or smallest
    if n_max > smallest and not args.keep_class_order:
        raise DataError(
            f"--n-max {n_max:,} is more than the {smallest:,} images of the pool's smallest "
            "class, and with a random class order any class may get the largest count; give "
            f"--n-max {smallest:,} or less (or --keep-class-order)"
        )
    if args.profile == "exponential":
        counts = exponential_counts(len(groups), n_max, args.ratio)
    else:
        counts = pareto_counts(len(groups), n_max, ratio=args.ratio)
    empty = sum(1 for c in counts if c < 1)
    if empty:
        raise DataError(
            f"--ratio {args.ratio:g} with n_max {n_max:,} leaves {empty} of {len(counts)} classes "
            f"without images; the largest possible ratio is {n_max:,} (1 image in the smallest "
            "class) - lower --ratio or raise --n-max; nothing was written"
        )
    if args.keep_class_order:
        for (label, images), k in zip(groups.items(), counts, strict=True):
            if k > len(images):
                raise DataError(
                    f"--n-max {n_max:,} and --ratio {args.ratio:g} give class {label} {k:,} "
                    f"images but --pool has {len(images):,}; lower --n-max"
                )
    entries = long_tail_from_balanced(pool, counts, args.seed, args.keep_class_order)
    s = split_stats(entries)
    if s.classes != len(groups):  # pragma: no cover - guarded above; never write a short split
        raise DataError(
            f"{args.out}: {len(groups) - s.classes} classes would have no images; nothing written"
        )
    with replacing_files([args.out], "--out"):
        write_split(args.out, entries)
    note = ""
    if abs(s.ratio - args.ratio) > 0.005 * args.ratio:
        note = f" (requested {args.ratio:g}; counts are rounded down to whole images)"
    print(_describe(args.out, s) + note)
    return 0


def run_classes(args: argparse.Namespace) -> int:
    """Write two class halves and their complements."""
    from balfeat.data.imbalance import class_splits
    from balfeat.data.splits import class_names_of, read_class_set, read_split, write_class_set
    from balfeat.errors import SplitFormatError

    try:
        names = list(class_names_of(read_split(args.split), args.split).values())
    except SplitFormatError:
        names = read_class_set(args.split)
    if len(names) < 2:
        raise DataError(
            f"--split {args.split}: {len(names)} class(es); two halves need at least 2 classes"
        )
    outs = {
        key: Path(args.out_dir) / f"{args.prefix}{key}.txt"
        for key in ("clsset1", "clsset1_comp", "clsset2", "clsset2_comp")
    }
    _check_outputs({str(p): "--out-dir" for p in outs.values()}, [args.split], args.force)
    for key, subset in class_splits(names, args.seed).items():
        out = outs.get(key, Path(args.out_dir) / f"{args.prefix}{key}.txt")
        with replacing_files([out], "--out-dir"):
            write_class_set(out, subset)
        print(f"{out}: {len(subset)} classes")
    return 0
