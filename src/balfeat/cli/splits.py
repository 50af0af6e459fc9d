"""``balfeat splits``: statistics of split files and generators of imbalanced splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from balfeat.data.splits import SplitEntry


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat splits`` with its ``stats`` and ``make`` subcommands."""
    parser = subparsers.add_parser(
        "splits",
        help="inspect split files and make splits of controlled imbalance",
        description="Inspect split files (one 'path label' per line) and make new ones.",
    )
    sub = parser.add_subparsers(dest="splits_command", metavar="SUBCOMMAND")

    stats = sub.add_parser(
        "stats",
        help="classes, max/min/total images per class, imbalance ratio, many/medium/few",
        description=(
            "Print one row per split file: classes, max/min/total images per class, the "
            "imbalance ratio max/min and the number of many (>100), medium (20-100) and few "
            "(<20) shot classes."
        ),
    )
    stats.add_argument("files", nargs="+", metavar="FILE", help="split files to summarise")
    stats.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: a table)"
    )
    stats.set_defaults(func=run_stats)

    make = sub.add_parser("make", help="write a new split file")
    kinds = make.add_subparsers(dest="make_kind", metavar="KIND")

    fam = kinds.add_parser(
        "family",
        help="the paper's nested LT-alpha family from a long-tailed split and a pool",
        description=(
            "Write LT<10*alpha> splits whose class counts are the long-tailed counts smoothed "
            "by n_c^alpha (total kept), nested: each drawn from the previous, more skewed one."
        ),
    )
    fam.add_argument("--long-tailed", required=True, help="the most skewed split (ImageNet-LT)")
    fam.add_argument("--pool", required=True, help="a split listing every usable train image")
    fam.add_argument(
        "--balanced", default=None, help="balanced split preferred for top-ups (default: none)"
    )
    fam.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        help="held-out split files whose images are never used (default: none; pass val/test)",
    )
    fam.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[0.8, 0.6, 0.4, 0.2],
        help="smoothing exponents (default: 0.8 0.6 0.4 0.2, the paper's LT8..LT2)",
    )
    fam.add_argument(
        "--out-pattern",
        default="lt{a}_train.txt",
        help="output file name; {a} is 10*alpha (default: lt{a}_train.txt)",
    )
    _common(fam)
    fam.set_defaults(func=run_family)

    bal = kinds.add_parser("balanced", help="floor(total/C) random images per class (LT0)")
    bal.add_argument("--pool", required=True, help="split listing the images to draw from")
    group = bal.add_mutually_exclusive_group(required=True)
    group.add_argument("--total", type=int, help="total images (e.g. 115000 for ImageNet-100k)")
    group.add_argument("--per-class", type=int, help="images per class")
    bal.add_argument("--exclude", nargs="*", default=[], help="held-out splits (default: none)")
    bal.add_argument("--out", required=True, help="output split file")
    _common(bal)
    bal.set_defaults(func=run_balanced)

    for kind, helptext in (
        ("exponential", "CIFAR-LT style exponential profile n_max*ratio^(-i/(C-1))"),
        ("pareto", "power-law profile n_max*(i+1)^(-shape), shape from the ratio"),
    ):
        p = kinds.add_parser(kind, help=f"subsample a pool to a {helptext}")
        p.add_argument("--pool", required=True, help="split listing the images to draw from")
        p.add_argument(
            "--n-max",
            type=int,
            default=None,
            help="images of the largest class (default: the smallest class size of the pool)",
        )
        p.add_argument(
            "--ratio", type=float, default=100.0, help="imbalance ratio n_max/n_min (default: 100)"
        )
        p.add_argument(
            "--keep-class-order",
            action="store_true",
            help="give the largest count to label 0 (default: a seeded random class order)",
        )
        p.add_argument("--out", required=True, help="output split file")
        _common(p)
        p.set_defaults(func=run_profile, profile=kind)

    cls = kinds.add_parser("classes", help="two 50%% class splits and complements (clsset*)")
    cls.add_argument("--split", required=True, help="split (or class-set file) naming the classes")
    cls.add_argument("--out-dir", required=True, help="directory for clsset{1,2}[_comp].txt")
    cls.add_argument("--prefix", default="", help="prefix of the file names (default: none)")
    _common(cls)
    cls.set_defaults(func=run_classes)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (default: 0); change for another draw"
    )


def _fmt_row(name: str, s: object) -> list[str]:
    from balfeat.data.splits import SplitStats

    assert isinstance(s, SplitStats)
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


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of each split file."""
    from balfeat.data.splits import split_stats

    stats = {Path(f).stem: split_stats(f) for f in args.files}
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in stats.items()}, indent=2))
        return 0
    header = ["split", "classes", "max", "min", "total", "ratio", "many", "medium", "few"]
    rows = [header] + [_fmt_row(k, v) for k, v in stats.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    return 0


def _read_many(files: list[str]) -> list[SplitEntry]:
    from balfeat.data.splits import read_split

    out: list[SplitEntry] = []
    for f in files:
        out.extend(read_split(f))
    return out


def run_family(args: argparse.Namespace) -> int:
    """Write the LT-alpha family."""
    from balfeat.data.imbalance import imbalance_family
    from balfeat.data.splits import read_split, split_stats, write_split

    family = imbalance_family(
        read_split(args.long_tailed),
        read_split(args.pool),
        alphas=args.alphas,
        balanced=read_split(args.balanced) if args.balanced else None,
        exclude=_read_many(args.exclude),
        seed=args.seed,
    )
    for alpha, entries in family.items():
        out = Path(args.out_pattern.format(a=round(alpha * 10)))
        write_split(out, entries)
        s = split_stats(entries)
        print(f"{out}: {s.classes} classes, max {s.max:,}, min {s.min:,}, total {s.total:,}")
    return 0


def run_balanced(args: argparse.Namespace) -> int:
    """Write a balanced split."""
    from balfeat.data.imbalance import balanced_split
    from balfeat.data.splits import read_split, split_stats, write_split

    entries = balanced_split(
        read_split(args.pool),
        total=args.total,
        per_class=args.per_class,
        exclude=_read_many(args.exclude),
        seed=args.seed,
    )
    write_split(args.out, entries)
    s = split_stats(entries)
    print(f"{args.out}: {s.classes} classes x {s.max:,} images, total {s.total:,}")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    """Write an exponential or Pareto long-tailed subsample of a pool."""
    from balfeat.data.imbalance import (
        exponential_counts,
        group_by_label,
        long_tail_from_balanced,
        pareto_counts,
    )
    from balfeat.data.splits import read_split, split_stats, write_split

    pool = read_split(args.pool)
    groups = group_by_label(pool)
    n_max = args.n_max or min(len(g) for g in groups.values())
    if args.profile == "exponential":
        counts = exponential_counts(len(groups), n_max, args.ratio)
    else:
        counts = pareto_counts(len(groups), n_max, ratio=args.ratio)
    entries = long_tail_from_balanced(pool, counts, args.seed, args.keep_class_order)
    write_split(args.out, entries)
    s = split_stats(entries)
    print(f"{args.out}: {s.classes} classes, max {s.max:,}, min {s.min:,}, total {s.total:,}")
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
    for key, subset in class_splits(names, args.seed).items():
        out = Path(args.out_dir) / f"{args.prefix}{key}.txt"
        write_class_set(out, subset)
        print(f"{out}: {len(subset)} classes")
    return 0
