"""Typed job configuration: dataclass trees from layered YAML files and ``key=value`` overrides.

Every job of balfeat (pre-training ``Config``, probing ``ProbeJob``, studies ``StudySpec``) is a
tree of dataclasses read by this one module:

- :func:`load_typed` builds an instance of a dataclass from its defaults, then from zero or more
  YAML files in order (later files override earlier ones), then from ``section.key=value``
  overrides as given on the command line. Override values are parsed with ``yaml.safe_load``
  (``[30, 40]`` is a list, ``true`` a bool).
- A YAML file may start with ``defaults: [base.yaml, ...]``: those files (paths relative to the
  file that names them) are loaded first, so a recipe holds only what differs from its base.
- Every value is checked against the field's declared type, and against the field's declared range
  (``field(default=..., metadata=bounds(ge=1))``). An unknown key raises
  :class:`~balfeat.errors.ConfigError` naming the key, where it came from and the closest valid key.
- Path fields declare their kind (``metadata=path_kind("file")``): ``file`` (an existing file),
  ``dir`` (an existing directory), ``file_or_dir``, ``new_file`` (a file to write: its folder must
  be creatable and writable, and it must not be a directory) or ``out_dir`` (a directory to create
  or reuse: not a file, writable). :func:`check_paths` checks them all before any work starts; it is
  separate from loading so that a config read back from a checkpoint is not checked against the
  filesystem of another machine.
- A section may be a *variant* (``metadata=variant("name", section_of, sections)``): the value of
  its selector key picks the section's dataclass (``method.name: kcl`` makes ``method`` a
  ``KCLParams``, whose keys are the only ``method.*`` keys accepted). Setting the selector switches
  the section's class and keeps the values already set that the new class also has; in a mapping
  the selector is applied first, whatever its position.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

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


def check_range(key: str, value: Any, meta: Mapping[str, Any], source: str = "") -> None:
    """Raise ConfigError when a numeric ``value`` is outside the range declared in ``meta``."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_range(f"{key}[{i}]", v, meta, source)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}" + _from(source))
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
    cfg: Any, key: str, value: Any, source: str, from_cli: bool = False, raw: str = ""
) -> None:
    """Set dotted ``key`` of the dataclass tree ``cfg`` to ``value``, checking type and range."""
    parts = key.split(".")
    node = cfg
    parent: dataclasses.Field[Any] | None = None
    for i, part in enumerate(parts):
        f = _field(node, part) if dataclasses.is_dataclass(node) else None
        if f is None:
            if parent is not None and "variant" in parent.metadata:
                selector, _, sections = parent.metadata["variant"]
                hint = _unknown_in_variant(key, node, part, selector, sections)
                raise ConfigError(f"unknown config key {key!r} in {source}: {hint}")
            hint = closest_key(key, type(cfg))
            raise ConfigError(
                f"unknown config key {key!r} in {source}" + (f"; {hint}" if hint else "")
            )
        tp = typing.get_type_hints(type(node))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"config key {key!r} in {source} is a section; give a mapping of its "
                        f"keys (e.g. {all_keys(tp)[0]}: ...), not {value!r}"  # type: ignore[arg-type]
                    )
                items = list(value.items())
                if "variant" in f.metadata:  # the selector first: it decides the other keys
                    sel = f.metadata["variant"][0]
                    items.sort(key=lambda kv: kv[0] != sel)
                for k, v in items:
                    set_key(cfg, f"{key}.{k}", v, source)
                return
            if parent is not None and part == parent.metadata.get("variant", ("",))[0]:
                owner = cfg
                for q in parts[: i - 1]:
                    owner = getattr(owner, q)
                _switch_variant(owner, parent, value, key, source)
                node = getattr(owner, parts[i - 1])
            checked = check_value(key, value, tp, source, from_cli, raw)
            check_range(key, checked, f.metadata, source)
            setattr(node, part, checked)
            return
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(
                f"config key {key!r} in {source}: {'.'.join(parts[: i + 1])!r} is a value, not a "
                "section"
            )
        parent = f
        node = getattr(node, part)


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


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping gives the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML loaders keep the last of two equal keys without a word, so a recipe saying
    ``epochs: 100`` and, further down, ``epochs: 1`` trains one epoch; this one names both lines.
    Keys merged in with ``<<: *anchor`` may be overridden (that is what a merge is for).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            mark = key_node.start_mark
            try:
                first = seen.setdefault(key, mark)
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if first is not mark:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"key {key!r} is given twice in the same section (line {first.line + 1} and "
                    f"line {mark.line + 1}); keep one",
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, refusing duplicated keys.

    Raises:
        yaml.YAMLError: invalid YAML, or a key given twice in one mapping.
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe


def read_layered_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """Read a YAML file and the files its ``defaults:`` list names, base files first.

    Returns:
        ``[(source description, mapping without 'defaults'), ...]`` in the order to apply them.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory; give a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; check the path")
    resolved = p.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(s) for s in (*_seen, resolved))
        raise ConfigError(f"config file {str(p)!r} includes itself through defaults: {chain}")
    try:
        data = load_yaml_text(p.read_text(encoding="utf-8-sig"))
    except DuplicateKeyError as err:
        raise ConfigError(f"config file {str(p)!r}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
            f"offset {err.start}); save it as UTF-8"
        ) from None
    if data is None:  # an empty (or comments-only) file: truncated, or the wrong file
        raise ConfigError(
            f"config file {str(p)!r} is empty (no keys); give a mapping of keys (e.g. "
            "'optim: {epochs: 10}'), or leave the file out to use the defaults"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of keys, got {type(data).__name__}"
        )
    data = dict(data)
    layers: list[tuple[str, dict]] = []
    defaults = data.pop("defaults", None)
    if defaults is not None:
        if isinstance(defaults, str):
            defaults = [defaults]
        if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
            raise ConfigError(
                f"config file {str(p)!r}: 'defaults' must be a list of YAML file paths "
                f"(relative to this file), got {defaults!r}"
            )
        for d in defaults:
            base = Path(d) if os.path.isabs(d) else p.parent / d
            if not base.is_file():
                raise ConfigError(
                    f"config file {str(p)!r}: defaults entry {d!r} does not exist "
                    f"(looked for {str(base)!r})"
                )
            layers.extend(read_layered_yaml(base, (*_seen, resolved)))
    layers.append((f"config file {str(p)!r}", data))
    return layers


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
        else:
            check_range(prefix + f.name, value, f.metadata)


def check_paths(cfg: Any, prefix: str = "") -> None:
    """Check every path field of a dataclass tree against its declared kind; "" is not checked.

    Raises:
        ConfigError: naming the key, the path and what is wrong with it.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_paths(value, prefix + f.name + ".")
            continue
        kind = f.metadata.get("path")
        if kind and isinstance(value, str) and value:
            check_path(prefix + f.name, value, kind)


def check_path(key: str, value: str, kind: str) -> None:
    """Check one path ``value`` of option ``key`` against ``kind`` (see :func:`path_kind`)."""
    p = Path(value)
    if kind == "file":
        if p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a directory, expected a file")
        if not p.is_file():
            raise ConfigError(f"{key}: file {value!r} does not exist; check the path")
        if not os.access(p, os.R_OK):
            raise ConfigError(f"{key}: file {value!r} is not readable")
    elif kind == "dir":
        if p.is_file():
            raise ConfigError(f"{key}: {value!r} is a file, expected a directory")
        if not p.is_dir():
            raise ConfigError(f"{key}: directory {value!r} does not exist; check the path")
    elif kind == "file_or_dir":
        if not p.exists():
            raise ConfigError(f"{key}: {value!r} does not exist; check the path")
    elif kind == "new_file":
        if p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a directory, expected a file path to write")
        check_writable_dir(key, p.parent if str(p.parent) else Path("."))
    elif kind == "out_dir":
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{key}: {value!r} is a file, expected a directory to write into")
        check_writable_dir(key, p)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown path kind {kind!r}")


def check_writable_dir(key: str, d: Path) -> None:
    """Raise ConfigError unless ``d`` exists as a writable directory or could be created."""
    probe = d
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{key}: cannot create {str(d)!r}: {str(probe)!r} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {str(probe)!r} is not writable; choose another location")


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
