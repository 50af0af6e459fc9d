"""Building a dataclass tree: defaults, mappings, YAML files and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from balfeat.errors import ConfigError
from balfeat.typed_config.paths import resolve_paths
from balfeat.typed_config.schema import (
    T,
    all_keys,
    check_range,
    check_value,
    closest_key,
)
from balfeat.typed_config.yaml_io import DuplicateKeyError, load_yaml_text, read_layered_yaml


def _field(node: Any, name: str) -> dataclasses.Field[Any] | None:
    for f in dataclasses.fields(node):
        if f.name == name:
            return f
    return None


def _switch_variant(
    node: Any, f: dataclasses.Field[Any], value: Any, key: str, source: str
) -> None:
    """Replace the variant section ``f`` of ``node`` by the class its selector ``value`` picks,
    keeping the values set in the old section (those differing from its defaults) that the new
    class also has."""
    selector, section_of, _ = f.metadata["variant"]
    old = getattr(node, f.name)
    if not isinstance(value, str):
        raise ConfigError(f"config key {key!r} in {source}: expected a name, got {value!r}")
    if getattr(old, selector, None) == value:
        return
    try:
        new = section_of(value)
    except ConfigError as err:
        raise ConfigError(f"{err} (in {source})") from None
    defaults = type(old)()
    keep = {g.name for g in dataclasses.fields(new)} - {selector}
    for g in dataclasses.fields(old):
        v = getattr(old, g.name)
        if g.name in keep and v != getattr(defaults, g.name):
            setattr(new, g.name, v)
    setattr(node, f.name, new)


def _unknown_in_variant(key: str, node: Any, part: str, selector: str, sections: Any) -> str:
    """The hint for a key the selected variant class does not have."""
    chosen = getattr(node, selector, "?")
    own = [g.name for g in dataclasses.fields(node) if g.name != selector]
    owners = [name for name, c in sections().items() if part in _names(c)]
    text = f"{chosen!r} has no parameter {part!r}; its keys: " + (", ".join(own) or "none")
    if owners:
        text += f"; {part!r} belongs to {', '.join(owners)}"
    else:
        close = difflib.get_close_matches(part, own, n=1)
        if close:
            text += f"; did you mean {key.rsplit('.', 1)[0] + '.' + close[0]!r}?"
    return text


def _names(cls: type) -> set[str]:
    return {g.name for g in dataclasses.fields(cls)}


def set_key(
    cfg: Any,
    key: str,
    value: Any,
    source: str,
    *,
    from_cli: bool = False,
    raw: str = "",
    prefix: str = "",
) -> None:
    """Set dotted ``key`` of the dataclass tree ``cfg`` to ``value``, checking type and range.

    ``prefix`` is where ``cfg`` sits in a larger tree (``probes.fast.``): errors name the whole key.
    """
    parts = key.split(".")
    full = prefix + key
    node = cfg
    parent: dataclasses.Field[Any] | None = None
    for i, part in enumerate(parts):
        f = _field(node, part) if dataclasses.is_dataclass(node) else None
        if f is None:
            if parent is not None and "variant" in parent.metadata:
                selector, _, sections = parent.metadata["variant"]
                hint = _unknown_in_variant(full, node, part, selector, sections)
                raise ConfigError(f"unknown config key {full!r} in {source}: {hint}")
            hint = closest_key(key, type(cfg))
            if hint and prefix:
                hint = hint.replace("mean '", "mean '" + prefix, 1)
            raise ConfigError(
                f"unknown config key {full!r} in {source}" + (f"; {hint}" if hint else "")
            )
        tp = typing.get_type_hints(type(node))[part]
        entry = entry_type(tp)
        if entry is not None:  # dict[str, Dataclass]: the next part names an entry
            here = prefix + ".".join(parts[: i + 1])
            _set_entries(node, f, entry, parts[i + 1 :], value, source, here, from_cli, raw)
            return
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"config key {full!r} in {source} is a section; give a mapping of its "
                        f"keys (e.g. {all_keys(tp)[0]}: ...), not {value!r}"  # type: ignore[arg-type]
                    )
                items = list(value.items())
                if "variant" in f.metadata:  # the selector first: it decides the other keys
                    sel = f.metadata["variant"][0]
                    items.sort(key=lambda kv: kv[0] != sel)
                for k, v in items:
                    set_key(cfg, f"{key}.{k}", v, source, prefix=prefix)
                return
            if parent is not None and part == parent.metadata.get("variant", ("",))[0]:
                owner = cfg
                for q in parts[: i - 1]:
                    owner = getattr(owner, q)
                _switch_variant(owner, parent, value, full, source)
                node = getattr(owner, parts[i - 1])
            checked = check_value(full, value, tp, source, from_cli, raw)
            check_range(full, checked, f.metadata, source)
            setattr(node, part, checked)
            return
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(
                f"config key {full!r} in {source}: {prefix + '.'.join(parts[: i + 1])!r} is a "
                "value, not a section"
            )
        parent = f
        node = getattr(node, part)


def entry_type(tp: Any) -> type | None:
    """The dataclass ``D`` of a ``dict[str, D]`` field type, else ``None``."""
    if typing.get_origin(tp) is not dict:
        return None
    args = typing.get_args(tp)
    if len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1]  # type: ignore[return-value]
    return None


def _set_entries(
    node: Any,
    f: dataclasses.Field[Any],
    entry: type,
    rest: list[str],
    value: Any,
    source: str,
    here: str,
    from_cli: bool,
    raw: str,
) -> None:
    """Set a key at or below a ``dict[str, Dataclass]`` field ``f`` of ``node``.

    ``probes: {a: {...}}`` replaces the whole mapping (each entry from the class defaults);
    ``probes.a: {...}`` or ``probes.a.lr=1`` sets keys of entry ``a`` (created when new).
    """
    make = f.metadata.get("entry", entry)
    if not rest:
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config key {here!r} in {source}: expected a mapping of names to sections, got "
                f"{value!r}"
            )
        fresh: dict[str, Any] = {}
        for name, sub in value.items():
            fresh[str(name)] = _entry(make, sub, source, f"{here}.{name}")
        setattr(node, f.name, fresh)
        return
    entries = getattr(node, f.name)
    name = rest[0]
    if len(rest) == 1:
        entries[name] = _entry(make, value, source, f"{here}.{name}", entries.get(name))
        return
    target = entries.get(name)
    if target is None:
        target = entries[name] = make()
    set_key(
        target, ".".join(rest[1:]), value, source, from_cli=from_cli, raw=raw,
        prefix=f"{here}.{name}.",
    )  # fmt: skip


def _entry(make: Callable[[], Any], value: Any, source: str, where: str, start: Any = None) -> Any:
    """An entry of a ``dict[str, Dataclass]``: ``start`` (or a new ``make()``) with ``value``'s
    keys (``None`` = the defaults)."""
    out = start if start is not None else make()
    if value is None:
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"config key {where!r} in {source} is a section; give a mapping of its keys (e.g. "
            f"{all_keys(type(out))[0]}: ...), not {value!r}"
        )
    for k, v in value.items():
        set_key(out, str(k), v, source, prefix=where + ".")
    return out


def merge_mapping(cfg: T, mapping: Mapping[str, Any], source: str) -> T:
    """Apply a nested mapping (as read from YAML) onto the dataclass ``cfg`` in place; return it."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{source} must hold a mapping of keys (e.g. {all_keys(type(cfg))[0]}: ...), got "
            f"{type(mapping).__name__}"
        )
    for k, v in mapping.items():
        set_key(cfg, str(k), v, source)
    return cfg


def parse_override(item: str) -> tuple[str, Any, str]:
    """Split ``section.key=value`` into ``(key, parsed value, raw text)``."""
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} is not of the form section.key=value (e.g. optim.base_lr=0.03)"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except DuplicateKeyError as err:
        raise ConfigError(f"override {item!r}: {err.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key, value, raw


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Apply ``section.key=value`` strings onto ``cfg`` in place and return it."""
    for item in overrides:
        key, value, raw = parse_override(item)
        set_key(cfg, key, value, f"command-line override {item!r}", from_cli=True, raw=raw)
    return cfg


def load_typed(
    cls: type[T],
    paths: str | Path | Sequence[str | Path] | None = None,
    overrides: Sequence[str] = (),
    validate: Callable[[T], None] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build a ``cls`` from defaults, an optional ``base`` mapping, YAML files and overrides.

    Args:
        cls: the dataclass of the job (every field has a default).
        paths: YAML files applied in order (each with its ``defaults:`` first).
        overrides: ``section.key=value`` strings applied last.
        validate: checks of relations between values, run on the result.
        base: a mapping applied before the files (e.g. a study's ``base:`` section).

    Raises:
        ConfigError: a file is missing or unparsable, a key is unknown, a value mistyped or out
            of range.
    """
    cfg = cls()
    if base:
        merge_mapping(cfg, base, "base mapping")
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    for p in paths:
        for source, data in read_layered_yaml(p):
            merge_mapping(cfg, data, source)
    apply_overrides(cfg, overrides)
    resolve_paths(cfg)
    check_all_ranges(cfg)
    if validate is not None:
        validate(cfg)
    return cfg


def check_all_ranges(cfg: Any, prefix: str = "") -> None:
    """Check every field of a dataclass tree against its declared range (defaults included)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_all_ranges(value, prefix + f.name + ".")
        elif isinstance(value, dict) and all(dataclasses.is_dataclass(v) for v in value.values()):
            for name, sub in value.items():  # a dict[str, Dataclass] (an empty dict: no values)
                check_all_ranges(sub, f"{prefix}{f.name}.{name}.")
        else:
            check_range(prefix + f.name, value, f.metadata)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as nested plain dicts/lists (YAML and checkpoint friendly)."""
    return dataclasses.asdict(cfg)


def from_dict(
    cls: type[T],
    mapping: Mapping[str, Any],
    source: str = "a saved config",
    validate: Callable[[T], None] | None = None,
) -> T:
    """Rebuild a ``cls`` from :func:`to_dict` output (e.g. from a checkpoint)."""
    cfg = merge_mapping(cls(), mapping, source)
    check_all_ranges(cfg)
    if validate is not None:
        validate(cfg)
    return cfg
