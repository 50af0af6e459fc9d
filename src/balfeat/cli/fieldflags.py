"""Flags derived from a config dataclass: one ``--name`` per field, its type, range and help text
from the field's declaration (``balfeat.typed_config`` metadata and the class's docstring).

A setting is declared once, on its dataclass; ``balfeat probe --lr`` is that field as a flag::

    flags = add_field_flags(parser, ProbeOptions, types={"device": device_name})

Every flag defaults to "not given" (``argparse.SUPPRESS``), so only the flags on the command line
override the config files; each value is checked at parse time as the loader checks the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from balfeat.cli.argtypes import float_in, int_in, int_list, path_of, subset_of
from balfeat.typed_config import range_text
from balfeat.typed_config.schema import field_docs


def flag_name(name: str) -> str:
    """The flag of a field: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + name.replace("_", "-")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[operator]


def _shown(value: Any) -> str:
    if value is None:
        return "auto, as above"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "" or value == []:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _non_none(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _value_type(
    f: dataclasses.Field[Any], tp: Any
) -> tuple[Callable[[str], Any] | None, tuple[Any, ...] | None]:
    """``(argparse type, choices)`` of a field's value."""
    meta = f.metadata
    limits = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
    if "path" in meta:
        return path_of(meta["path"]), None
    if typing.get_origin(tp) is Literal:
        return None, typing.get_args(tp)
    if tp is int:
        return int_in(**limits), None
    if tp is float:
        return float_in(**limits), None
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if inner is int:
            return int_list(ge=limits.get("ge"), increasing=True), None
        if "choices" in meta:
            return subset_of(tuple(meta["choices"])), None
    return None, None


def add_field_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> dict[str, str]:
    """Add one flag per field of the dataclass ``cls`` to ``parser``.

    A bool field that is off by default is a switch (``--balanced``); one that is on is its
    ``--no-`` switch (``bias`` -> ``--no-bias``); ``bool | None`` is a switch defaulting to
    "auto". ``types`` replaces the parse check of named fields (e.g. a device name).

    Returns:
        field name -> its flag, for naming the flag in error messages.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    flags: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        tp, optional = _non_none(hints[f.name])
        default = _default(f)
        doc = docs.get(f.name, "").rstrip(".")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        flag = flag_name(f.name)
        if tp is bool:
            if default is True:
                flag = flag_name("no_" + f.name)
                kw.update(action="store_false", help=f"turn off: {doc} (default: on)")
            else:
                kw.update(action="store_true", help=f"{doc} (default: {_shown(default)})")
        else:
            conv, choices = _value_type(f, tp)
            if types and f.name in types:
                conv = types[f.name]
            rng = range_text(f.metadata)
            extra = f"; {rng}" if rng and not optional and choices is None else ""
            kw.update(help=f"{doc} (default: {_shown(default)}{extra})")
            if conv is not None:
                kw["type"] = conv
            if choices is not None:
                kw["choices"] = choices
        kw["help"] = kw["help"].replace("%", "%%").replace("``", "")
        parser.add_argument(flag, **kw)
        flags[f.name] = flag
    return flags
