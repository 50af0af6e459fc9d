"""YAML reading: one document with duplicated keys refused, and files layered by ``defaults:``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from balfeat.errors import ConfigError


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
