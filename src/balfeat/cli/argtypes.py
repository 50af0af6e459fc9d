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
import itertools
from collections.abc import Callable
from typing import Any

from balfeat.errors import ConfigError
from balfeat.typed_config import (
    PathKind,
    bounds,
    check_path,
    check_range,
    fits_int64,
    range_text,
    resolve_path,
)


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
        if kind == "int" and not fits_int64(value):
            raise argparse.ArgumentTypeError(f"{text!r} does not fit in a 64-bit integer")
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

    The value is the absolute path, a ``str`` (:func:`~balfeat.typed_config.resolve_path`);
    ``""`` is refused (an empty path is never meant).
    """

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("empty path")
        if "\ufeff" in text or "\x00" in text:
            raise argparse.ArgumentTypeError(f"path {text!r} holds a BOM or NUL character")
        try:  # ~ and $VAR expanded, a relative path made absolute: it means the same anywhere
            text = resolve_path("path", text)
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


def int_list(ge: float | None = None, increasing: bool = False) -> Callable[[str], list[int]]:
    """A comma-separated list of integers (``60,80``), each in range, optionally increasing."""
    meta = bounds(ge=ge)

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers like 60,80, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
        if not all(fits_int64(v) for v in values):
            raise argparse.ArgumentTypeError(f"{text!r} holds a value beyond 64-bit integers")
        try:
            check_range("value", values, meta)
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"every value must be {range_text(meta)}, got {text!r}"
            ) from None
        if increasing and any(b <= a for a, b in itertools.pairwise(values)):
            raise argparse.ArgumentTypeError(f"values must increase, got {text!r}")
        return values

    parse.__name__ = "int list"
    parse.__dict__.update(balfeat_number="int", balfeat_range=dict(meta))
    return parse


def subset_of(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A comma-separated subset of ``choices`` (``crt,tau``); ``""`` is the empty subset."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(repr(b) for b in bad)}; choose from {','.join(choices)}"
            )
        return items

    parse.__name__ = "list"
    parse.__dict__["balfeat_choices"] = choices
    return parse


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist on this machine."""
    import torch

    t = text.strip()
    if t in ("auto", "cpu"):
        return t
    if t == "cuda" or (t.startswith("cuda:") and t[5:].isdigit()):
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{t!r}: this machine has no CUDA GPU; use cpu or auto"
            )
        if ":" in t and int(t[5:]) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{t!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        return t
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


device_name.__dict__["balfeat_choices"] = ("auto", "cpu", "cuda")


def grouping_spec(text: str) -> str:
    """A many/medium/few grouping: default, reference, thirds or ``MANY,FEW`` thresholds."""
    from balfeat.errors import BalfeatError
    from balfeat.evaluation.metrics import parse_grouping

    try:
        parse_grouping(text)
    except BalfeatError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


grouping_spec.__dict__["balfeat_choices"] = ("default", "reference", "thirds", "MANY,FEW")
