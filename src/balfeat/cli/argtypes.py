"""Argument types of the CLI: declared ranges and path kinds, checked at parse time.

The same checks as config keys (``balfeat.typed_config.bounds`` / ``path_kind``), for flags::

    p.add_argument("--epochs", type=int_in(ge=1), default=100, help=...)
    p.add_argument("--lr", type=float_in(gt=0), ...)
    p.add_argument("--train-split", type=path_of("file"), ...)
    p.add_argument("--out", type=path_of("out_dir"), ...)

A bad value makes argparse stop with exit 2 and one line naming the option and what is wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from balfeat.errors import ConfigError
from balfeat.typed_config import PathKind, bounds, check_path, check_range, range_text


def _ranged(conv: Callable[[str], Any], kind: str, **limits: float | None) -> Callable[[str], Any]:
    meta = bounds(**limits)

    def parse(text: str) -> Any:
        try:
            value = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind == 'int' else 'a number'}"
                + (f" {range_text(meta)}" if meta else "")
                + f", got {text!r}"
            ) from None
        try:
            check_range("value", value, meta)
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"must be {range_text(meta) or 'a finite number'}, got {text!r}"
            ) from None
        return value

    parse.__name__ = kind  # argparse names the type in its messages
    # Declared for introspection (tests/cli/test_cli_sweep.py derives its bad values from them).
    parse.__dict__.update(balfeat_number=kind, balfeat_range=dict(meta))
    return parse


def int_in(
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Callable[[str], int]:
    """An ``int`` argument type with a declared range."""
    return _ranged(int, "int", ge=ge, gt=gt, le=le, lt=lt)


def float_in(
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Callable[[str], float]:
    """A ``float`` argument type with a declared range (non-finite values are refused)."""
    return _ranged(float, "float", ge=ge, gt=gt, le=le, lt=lt)


def path_of(kind: PathKind) -> Callable[[str], str]:
    """A path argument type that must be of ``kind`` (see ``balfeat.typed_config.path_kind``).

    The value stays a ``str``; ``""`` is refused (an empty path is never meant).
    """

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("empty path")
        if "\ufeff" in text or "\x00" in text:
            raise argparse.ArgumentTypeError(f"path {text!r} holds a BOM or NUL character")
        try:
            check_path("path", text, kind)
        except ConfigError as err:
            msg = str(err)
            raise argparse.ArgumentTypeError(
                msg.split(": ", 1)[1] if ": " in msg else msg
            ) from None
        return text

    parse.__name__ = {"file": "file", "dir": "directory", "new_file": "output file"}.get(
        kind, "path"
    )
    parse.__dict__["balfeat_path"] = kind  # declared kind, for introspection (see _ranged)
    return parse
