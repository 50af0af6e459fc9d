"""``balfeat data``: find or fetch datasets and show where they are."""

from __future__ import annotations

import argparse
import os
import time

from balfeat.cli.argtypes import path_of
from balfeat.cli.groups import add_group


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``balfeat data`` with its ``fetch`` and ``info`` subcommands."""
    sub = add_group(
        subparsers,
        "data",
        help="find or fetch datasets (Fashion-MNIST via apt, no other network access)",
        description="Find or fetch datasets and show where they are.",
    )
    _add_fetch(sub)
    _add_info(sub)


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch",
        help="make sure a dataset is available locally and print where it is",
        description=(
            "Look for the dataset (the --dir you name, /usr/share/datasets, the user cache) and "
            "fetch it with `apt-get download` into the cache when absent."
        ),
    )
    fetch.add_argument("name", choices=["fashion-mnist"], help="dataset to fetch")
    fetch.add_argument(
        "--dir",
        default=None,
        type=path_of("dir"),
        help="folder holding the IDX files (default: search /usr/share/datasets/fashion-mnist "
        "and the cache, then fetch); set it to use a copy of your own",
    )
    fetch.set_defaults(func=run_fetch)


def _add_info(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser(
        "info",
        help="where the data and the cache are, without fetching",
        description="Print where Fashion-MNIST is found (or that it is not) and the cache folder.",
    )
    info.add_argument(
        "--dir",
        default=None,
        type=path_of("dir"),
        help="a folder to check first (default: search only)",
    )
    info.set_defaults(func=run_info)


def run_fetch(args: argparse.Namespace) -> int:
    """Find or fetch Fashion-MNIST, load it once (filling the array cache) and describe it."""
    from balfeat.data.sources import cache_root, find_fashion_mnist, load_fashion_mnist
    from balfeat.typed_config import check_writable_dir

    # The cache receives the fetched files and the decoded arrays: check it before any work.
    key = "cache folder ($BALFEAT_CACHE)" if os.environ.get("BALFEAT_CACHE") else "cache folder"
    check_writable_dir(key, cache_root())
    start = time.perf_counter()
    data = load_fashion_mnist(args.dir)
    seconds = time.perf_counter() - start
    print(f"fashion-mnist: {find_fashion_mnist(args.dir)}")
    print(f"  train {tuple(data.train_x.shape)} {data.train_x.dtype}, labels {data.train_y.shape}")
    print(f"  test  {tuple(data.test_x.shape)} {data.test_x.dtype}, labels {data.test_y.shape}")
    print(f"  classes: {', '.join(data.class_names)}")
    print(f"  loaded in {seconds:.2f} s")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print where Fashion-MNIST is found (or that it is not) and the cache folder."""
    from balfeat.data.sources import SYSTEM_FASHION_MNIST, cache_root, find_fashion_mnist

    print(f"cache: {cache_root()}")
    present = "present" if SYSTEM_FASHION_MNIST.is_dir() else "absent"
    print(f"system copy: {SYSTEM_FASHION_MNIST} ({present})")
    found = find_fashion_mnist(args.dir)
    print(
        f"fashion-mnist: {found if found else 'not found; run `balfeat data fetch fashion-mnist`'}"
    )
    return 0
