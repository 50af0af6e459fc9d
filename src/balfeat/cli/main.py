"""Entry point of the ``balfeat`` command."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from balfeat import __version__
from balfeat.errors import BalfeatError

# Subcommand modules under balfeat.cli, in the order --help lists them. Each defines
# ``add_parser(subparsers)`` that registers one subcommand and sets ``func`` to a callable taking
# the parsed namespace and returning an exit code.
COMMANDS: tuple[str, ...] = (
    "data",
    "splits",
    "pretrain",
    "probe",
    "evaluate",
    "export",
    "study",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="balfeat",
        description=(
            "Learn and measure image representations on class-imbalanced (long-tailed) data. "
            "Start with `balfeat demo` on the embedded Fashion-MNIST data."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"balfeat {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"balfeat.cli.{name}")
        module.add_parser(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker (whose message
    holds the worker's traceback), the original message alone."""
    text = str(err)
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        return last.split(": ", 1)[1] if last.startswith("balfeat.errors.") else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (BalfeatError, FileNotFoundError) as err:
        # Errors from bad input: one clear line, no traceback. Set BALFEAT_DEBUG=1 for the trace.
        if os.environ.get("BALFEAT_DEBUG"):
            raise
        print(f"balfeat {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
