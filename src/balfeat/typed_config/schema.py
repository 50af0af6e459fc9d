"""Field metadata (ranges, variants, path kinds) and the checks of one value against its field."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from balfeat.errors import ConfigError

T = TypeVar("T")

PathKind = Literal["file", "dir", "file_or_dir", "new_file", "out_dir"]


def bounds(
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Field metadata declaring the allowed range of a numeric value (``None`` = unbounded).

    Example: ``epochs: int = field(default=200, metadata=bounds(ge=1))``.
    """
    out = dict(extra)
    for name, val in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)):
        if val is not None:
            out[name] = val
    return out


def variant(
    selector: str,
    section_of: Callable[[str], Any],
    sections: Callable[[], Mapping[str, type]],
) -> dict[str, Any]:
    """Field metadata of a variant section whose class is chosen by its ``selector`` key.

    Args:
        selector: the key inside the section that selects the class (e.g. ``name``).
        section_of: a fresh section (an instance) for a selector value; raises
            :class:`ConfigError` for an unknown value.
        sections: every selector value and its section class (for key listings and hints).
    """
    return {"variant": (selector, section_of, sections)}


def entries(factory: Callable[[], Any]) -> dict[str, Any]:
    """Field metadata of a ``dict[str, Dataclass]`` field whose new entries start from
    ``factory()`` instead of the class defaults (e.g. a study's probes, whose data differ)."""
    return {"entry": factory}


def path_kind(kind: PathKind, **extra: Any) -> dict[str, Any]:
    """Field metadata declaring what a path value must be (see the module docstring).

    An empty string always means "not given" and is not checked.
    """
    return {"path": kind, **extra}


def range_text(meta: Mapping[str, Any]) -> str:
    """Human text of a declared range, e.g. ``>= 1`` or ``> 0 and <= 1``."""
    parts = []
    for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if name in meta:
            parts.append(f"{sym} {meta[name]:g}")
    return " and ".join(parts)


def fits_int64(value: int) -> bool:
    """Whether ``value`` fits a signed 64-bit integer, as torch, numpy and checkpoints hold it (a
    larger seed or count fails deep inside them, or silently means nothing)."""
    return -(2**63) <= value < 2**63


def check_range(key: str, value: Any, meta: Mapping[str, Any], source: str = "") -> None:
    """Raise ConfigError when a numeric ``value`` is outside the range declared in ``meta``."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_range(f"{key}[{i}]", v, meta, source)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        rule = f" {range_text(meta)}" if range_text(meta) else ""
        raise ConfigError(f"{key} must be a finite number{rule}, got {value!r}" + _from(source))
    ok = (
        ("ge" not in meta or value >= meta["ge"])
        and ("gt" not in meta or value > meta["gt"])
        and ("le" not in meta or value <= meta["le"])
        and ("lt" not in meta or value < meta["lt"])
    )
    if not ok:
        raise ConfigError(f"{key} must be {range_text(meta)}, got {value!r}" + _from(source))


def _from(source: str) -> str:
    return f" (from {source})" if source else ""


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config dataclass, e.g. ``optim.base_lr`` (for a variant
    section: the keys of all its classes)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if "variant" in f.metadata:
            for sub in f.metadata["variant"][2]().values():
                keys.extend(k for k in all_keys(sub, prefix + f.name + ".") if k not in keys)
        elif dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, prefix + f.name + "."))  # type: ignore[arg-type]
        else:
            keys.append(prefix + f.name)
    return keys


def closest_key(key: str, cls: type) -> str:
    """A hint naming the valid key of ``cls`` closest to ``key`` (``""`` when none is close)."""
    leaves = all_keys(cls)
    sections = {k.rsplit(".", 1)[0] for k in leaves if "." in k}
    # Compare with keys of the same depth first (``famly`` -> ``family``, not ``family.sets``).
    depth = key.count(".")
    keys = [k for k in [*leaves, *sorted(sections)] if k.count(".") == depth] or leaves
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
    # Also compare the last component alone, so ``lr`` finds ``optim.base_lr``.
    leaf = key.rsplit(".", 1)[-1]
    leaf_match = difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in leaves], n=1)
    if leaf_match:
        candidates = [k for k in leaves if k.endswith("." + leaf_match[0]) or k == leaf_match[0]]
        best = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
        if best and (not match or _ratio(key, best[0]) >= _ratio(key, match[0]) - 0.1):
            match = best
    return f"did you mean {match[0]!r}?" if match else ""


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def type_name(tp: Any) -> str:
    """Readable name of a field type (``one of 'a', 'b'``, ``list of int``, ...)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list of {type_name(inner)}"
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def check_value(
    key: str, value: Any, tp: Any, source: str, from_cli: bool = False, raw: str = ""
) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming key, expected and got."""

    def bad() -> ConfigError:
        return ConfigError(
            f"config key {key!r} from {source}: expected {type_name(tp)}, got "
            f"{value!r} ({type(value).__name__}); fix the value"
        )

    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) is type(allowed[0]):
            return value
        if from_cli and raw in allowed:
            return raw
        raise bad()
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(key, value, arg, source, from_cli, raw)
            except ConfigError:
                continue
        raise bad()
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad()
        return [check_value(f"{key}[{i}]", v, inner, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {
            check_value(f"{key}", k, kt, source): check_value(f"{key}.{k}", v, vt, source)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not fits_int64(value):
                raise ConfigError(
                    f"config key {key!r} from {source}: {value} does not fit in a 64-bit "
                    "integer; give a smaller value"
                )
            return value
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        if from_cli:  # ``run.output_dir=2024`` means the text, not the number
            return raw
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    raise bad()


def check_fields(obj: Any, label: str = "") -> None:
    """Check every field of the dataclass instance ``obj`` against its declared type, ``Literal``
    choices and range, converting where the loader would (``30`` -> ``30.0`` for a float field).

    For a settings class built directly in Python (``ProbeConfig(lr=0.1)``): call it from
    ``__post_init__`` so the declaration is the one place a value is checked. ``label`` starts
    each message (``"probe "`` gives ``probe lr must be > 0, got 0``).

    Raises:
        ConfigError: naming the field, what it must be and the value.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp, name = getattr(obj, f.name), hints[f.name], label + f.name
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            if value not in allowed:
                choices = " or ".join(repr(a) for a in allowed)
                raise ConfigError(f"unknown {name} {value!r}; use {choices}")
            continue
        if isinstance(value, tuple):
            value = list(value)
        try:
            checked = check_value(name, value, tp, "")
        except ConfigError:
            raise ConfigError(f"{name} must be {type_name(tp)}, got {value!r}") from None
        check_range(name, checked, f.metadata)
        setattr(obj, f.name, checked)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's text from the ``Attributes:`` section of the Google-style docstrings of
    ``cls`` and its bases (a subclass's text wins), one line each: the help of a derived flag."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.getdoc(klass) or ""
        if "Attributes:" not in text:
            continue
        name = ""
        for line in text.split("Attributes:", 1)[1].splitlines():
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            if indent == 0:  # the next section
                break
            head, sep, rest = line.strip().partition(": ")
            if indent <= 4 and sep and head.isidentifier():
                name = head
                docs[name] = rest.strip()
            elif name:
                docs[name] += " " + line.strip()
    return docs
